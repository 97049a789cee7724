/*
 * Counts timer interrupts: the PIT at 100 Hz through the PIC (IRQ 0, vector 0x20) and the local
 * APIC's ExtINT input, printing "tick N" every 10 interrupts and halting in between. Without
 * working timer interrupts it prints nothing (the vCPU halts for good).
 */
#include "common/guest.h"

#define PIC_MASTER 0x20
#define PIC_SLAVE 0xa0
#define PIC_EOI 0x20
#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_HZ 1193182
#define TICKS_PER_SECOND 100
#define TIMER_VECTOR 0x20
#define PIC_SPURIOUS_VECTOR 0x27
#define APIC_SPURIOUS_VECTOR 0xff
#define LAPIC_BASE 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_LVT0 0x350
#define LVT_EXTINT (7 << 8)

struct __attribute__((packed)) idt_entry {
	u16 offset_low;
	u16 selector;
	u8 ist;
	u8 type;
	u16 offset_mid;
	u32 offset_high;
	u32 reserved;
};

struct interrupt_frame;

static struct idt_entry idt[256];
static volatile u64 ticks;

__attribute__((interrupt)) static void timer_interrupt(struct interrupt_frame *frame)
{
	(void)frame;
	ticks++;
	outb(PIC_MASTER, PIC_EOI);
}

/* Spurious interrupts (PIC IRQ 7, the APIC's spurious vector) need no EOI. */
__attribute__((interrupt)) static void spurious_interrupt(struct interrupt_frame *frame)
{
	(void)frame;
}

static void set_gate(u8 vector, void (*handler)(struct interrupt_frame *))
{
	u64 address = (u64)handler;
	idt[vector] = (struct idt_entry){
		.offset_low = address & 0xffff,
		.selector = 0x08, /* the 64-bit code segment of the boot GDT */
		.type = 0x8e,	  /* present, interrupt gate */
		.offset_mid = (address >> 16) & 0xffff,
		.offset_high = address >> 32,
	};
}

static void lapic_write(u32 reg, u32 value)
{
	*(volatile u32 *)(LAPIC_BASE + reg) = value;
}

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	set_gate(TIMER_VECTOR, timer_interrupt);
	set_gate(PIC_SPURIOUS_VECTOR, spurious_interrupt);
	set_gate(APIC_SPURIOUS_VECTOR, spurious_interrupt);
	struct __attribute__((packed)) {
		u16 limit;
		u64 base;
	} pointer = { sizeof(idt) - 1, (u64)idt };
	__asm__ volatile("lidt %0" : : "m"(pointer));

	/* The PIC: IRQs 0-15 at vectors 0x20-0x2f, only IRQ 0 unmasked. */
	outb(PIC_MASTER, 0x11);
	outb(PIC_SLAVE, 0x11);
	outb(PIC_MASTER + 1, TIMER_VECTOR);
	outb(PIC_SLAVE + 1, TIMER_VECTOR + 8);
	outb(PIC_MASTER + 1, 0x04);
	outb(PIC_SLAVE + 1, 0x02);
	outb(PIC_MASTER + 1, 0x01);
	outb(PIC_SLAVE + 1, 0x01);
	outb(PIC_MASTER + 1, 0xfe);
	outb(PIC_SLAVE + 1, 0xff);
	/* The local APIC on, the PIC's interrupts taken through LINT0 (ExtINT, unmasked). */
	lapic_write(LAPIC_SVR, 0x100 | APIC_SPURIOUS_VECTOR);
	lapic_write(LAPIC_LVT0, LVT_EXTINT);
	/* PIT channel 0: rate generator (mode 2), low then high byte of the divisor. */
	u32 divisor = PIT_HZ / TICKS_PER_SECOND;
	outb(PIT_COMMAND, 0x34);
	outb(PIT_CHANNEL0, divisor & 0xff);
	outb(PIT_CHANNEL0, divisor >> 8);

	u64 printed = 0;
	__asm__ volatile("sti");
	for (;;) {
		__asm__ volatile("hlt");
		while (printed < ticks / 10) {
			printed++;
			serial_puts("tick ");
			serial_put_dec(printed);
			serial_puts("\n");
		}
	}
}
