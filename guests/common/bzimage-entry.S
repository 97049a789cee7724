/*
 * Protected-mode part of the bzImage-shaped test guest, loaded at 1 MiB. The 64-bit boot protocol
 * enters at +0x200 in long mode with the low memory identity-mapped and %rsi = zero page; the
 * 32-bit entry at +0 is never used by corral and just halts.
 */
	.section .text.entry, "ax"
	.code32
	.globl startup_32
startup_32:
	cli
1:	hlt
	jmp 1b

	.code64
	.org 0x200
	.globl startup_64
startup_64:
	cli
	mov $boot_stack_top, %rsp
	mov $1, %edi			/* GUEST_BOOT_LINUX */
	call guest_main			/* %rsi already holds the zero page */
2:	hlt
	jmp 2b

	.section .bss
	.p2align 4
boot_stack:
	.skip 16384
boot_stack_top:
