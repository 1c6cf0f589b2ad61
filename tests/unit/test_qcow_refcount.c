/* SPDX-License-Identifier: MIT */
/* Refcount block entry encoding for every refcount width (orders 0..6). */
#include <criterion/criterion.h>

#include "internal.h"

Test(qcow_refcount, entries_round_trip_without_touching_neighbours)
{
	uint8_t rb[512];

	for (unsigned order = 0; order <= 6; order++) {
		struct qcow_image img = {.refcount_order = order, .refcount_bits = 1u << order};
		uint32_t n = 512 * 8 >> order;
		uint64_t max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;

		memset(rb, 0, sizeof(rb));
		for (uint32_t i = 0; i < n; i += 3)
			rb_entry_set(&img, rb, i, max - (i % 2));
		for (uint32_t i = 0; i < n; i++) {
			uint64_t want = i % 3 ? 0 : max - (i % 2);

			if (max == 1 && i % 3 == 0)
				want = i % 2 ? 0 : 1;
			cr_assert_eq(rb_entry_get(&img, rb, i), want, "order %u entry %u", order,
			             i);
		}
	}
}

Test(qcow_refcount, sixteen_bit_entries_are_big_endian)
{
	struct qcow_image img = {.refcount_order = 4, .refcount_bits = 16};
	uint8_t rb[8] = {0};

	rb_entry_set(&img, rb, 1, 0x1234);
	cr_assert(rb[2] == 0x12 && rb[3] == 0x34);
	cr_assert_eq(rb_entry_get(&img, rb, 1), 0x1234);
}

Test(qcow_refcount, sub_byte_entries_are_lsb_first)
{
	struct qcow_image img = {.refcount_order = 0, .refcount_bits = 1};
	uint8_t rb[2] = {0};

	rb_entry_set(&img, rb, 0, 1);
	rb_entry_set(&img, rb, 9, 1);
	cr_assert(rb[0] == 0x01 && rb[1] == 0x02);
}
