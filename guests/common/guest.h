/*
 * The little runtime of corral's freestanding test guests: port I/O, the COM1 console, the
 * debug-exit port and the boot information the VMM passed. Guests implement guest_run().
 */
#ifndef CORRAL_GUEST_H
#define CORRAL_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define I8042_DATA 0x60
#define I8042_STATUS 0x64

struct boot_info {
	const char *cmdline;	/* NULL when absent */
	u64 initrd_addr;
	u64 initrd_size;
	u64 rsdp;		/* ACPI RSDP address the VMM announced; 0 when none */
	u64 setup_data;		/* the Linux boot protocol's setup_data list; 0 when none (PVH) */
};

static inline void outb(u16 port, u8 value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

void serial_putc(char c);
void serial_puts(const char *s);
void serial_put_dec(u64 value);
void serial_put_hex(u64 value);
/* Blocks until the UART has a byte. */
char serial_getc(void);
/* The decimal value of `key` (e.g. "bench_mib=") on the command line, or `fallback`. */
u64 cmdline_u64(const char *cmdline, const char *key, u64 fallback);
/* Ends the VM: the VMM exits with this code (reason poweroff). */
__attribute__((noreturn)) void debug_exit(u8 code);
__attribute__((noreturn)) void halt_forever(void);

void guest_run(const struct boot_info *boot);

#endif
