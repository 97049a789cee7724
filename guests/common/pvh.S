/*
 * PVH entry for corral's test guests. The VMM enters at pvh_start32 in 32-bit protected mode,
 * paging off, %ebx = hvm_start_info. This stub identity-maps the first 1 GiB with 2 MiB pages,
 * switches to long mode and calls guest_main(GUEST_BOOT_PVH, start_info).
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.p2align 2
	.long 4				/* name size */
	.long 4				/* descriptor size */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.p2align 2
	.long pvh_start32
	.p2align 2

	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	mov %ebx, %edi			/* start_info: first argument of guest_main */
	mov $boot_stack_top, %esp

	/* PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] -> i * 2 MiB (present, writable, huge). */
	mov $pdpt, %eax
	or $0x3, %eax
	mov %eax, pml4
	mov $pd, %eax
	or $0x3, %eax
	mov %eax, pdpt
	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $21, %eax
	or $0x83, %eax
	mov %eax, pd(, %ecx, 8)
	inc %ecx
	cmp $512, %ecx
	jne 1b

	mov %cr4, %eax
	or $0x20, %eax			/* PAE */
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx		/* EFER */
	rdmsr
	or $0x100, %eax			/* LME */
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax		/* PG | PE */
	mov %eax, %cr0
	lgdt gdt_pointer
	ljmp $0x08, $long_mode

	.code64
long_mode:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %edi, %esi			/* second argument: boot information */
	xor %edi, %edi			/* first argument: GUEST_BOOT_PVH */
	call guest_main
2:	hlt
	jmp 2b

	.section .rodata
	.p2align 3
gdt:
	.quad 0
	.quad 0x00af9b000000ffff	/* 64-bit code */
	.quad 0x00cf93000000ffff	/* data */
gdt_end:
gdt_pointer:
	.word gdt_end - gdt - 1
	.long gdt

	.section .bss
	.p2align 12
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4096
boot_stack:
	.skip 16384
boot_stack_top:
