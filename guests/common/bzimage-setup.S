/*
 * The real-mode setup area of the bzImage-shaped test guest: one 512-byte boot sector carrying the
 * setup header at 0x1f1 and one setup sector (setup_sects = 1). Field offsets and meanings are
 * those of the Linux x86 boot protocol (Documentation/x86/boot.rst), version 2.15.
 */
	.section .text
	.org 0x1f1
	.byte 1				/* setup_sects */
	.org 0x1fa
	.word 0xffff			/* vid_mode: normal */
	.org 0x1fe
	.word 0xaa55			/* boot_flag */
	.byte 0xeb, 0x66		/* jump over the header */
	.ascii "HdrS"			/* 0x202 header */
	.word 0x020f			/* 0x206 version 2.15 */
	.org 0x211
	.byte 0x01			/* loadflags: LOADED_HIGH */
	.org 0x214
	.long 0x100000			/* code32_start */
	.org 0x22c
	.long 0x7fffffff		/* initrd_addr_max */
	.long 0x200000			/* 0x230 kernel_alignment */
	.byte 0				/* 0x234 relocatable_kernel */
	.byte 0				/* 0x235 min_alignment */
	.word 0x0001			/* 0x236 xloadflags: XLF_KERNEL_64 */
	.long 255			/* 0x238 cmdline_size */
	.org 0x258
	.quad 0x100000			/* pref_address */
	.long 0x100000			/* 0x260 init_size: code, data, bss and stack */
	.org 0x400
