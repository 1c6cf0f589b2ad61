/* SPDX-License-Identifier: MIT */
/*
 * errors.c - one-line error messages.  A failing call records what went
 * wrong, naming the image file, and returns the errno it was given, so
 * that "return qcow_fail(img, -EIO, ...)" reads as one step.
 */
#include <stdio.h>

#include "internal.h"

int qcow_fail(struct qcow_image *img, int err, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(img->errmsg, sizeof(img->errmsg), "%s: %s", img->path, msg);
	return err;
}

void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int qcow_fenced(const struct qcow_image *img)
{
	return img->fenced;
}

const char *qcow_last_error(const struct qcow_image *img)
{
	return img->errmsg[0] ? img->errmsg : "no error";
}
