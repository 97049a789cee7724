/* Loads an empty IDT and raises an exception: no handler, no double-fault handler, triple fault. */
#include "common/guest.h"

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	struct __attribute__((packed)) {
		u16 limit;
		u64 base;
	} empty_idt = { 0, 0 };
	serial_puts("triple-faulting\n");
	__asm__ volatile("lidt %0; ud2" : : "m"(empty_idt));
	halt_forever();
}
