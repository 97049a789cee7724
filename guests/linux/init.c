/*
 * corral's init for the real-Linux boot test: prints a marker, reports how many vCPUs Linux brought
 * online, and reboots (Linux resets through the i8042 controller, so the VMM sees a reboot) — or,
 * with `corral_init=poweroff` on the kernel command line (Linux hands it to init as an environment
 * variable), powers off (through ACPI S5 when the kernel has ACPI).
 *
 * Sequential and fork-free on purpose: on the emulated-KVM development host each fork+exec costs
 * about a second and concurrent processes are unreliable (see README.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <termios.h>
#include <unistd.h>

/* Reports a problem through the kernel log, which reaches the serial console even when init
 * has no console of its own. */
static void report(const char *what)
{
	char line[160];
	int fd = open("/dev/kmsg", O_WRONLY);
	if (fd < 0)
		return;
	int len = snprintf(line, sizeof(line), "corral-init: %s: %s\n", what, strerror(errno));
	if (len > 0)
		write(fd, line, (size_t)len);
	close(fd);
}

/* The initramfs has no device nodes (building it needs no root), so init mounts devtmpfs itself
 * and takes /dev/console as stdin/stdout/stderr. */
static void open_console(void)
{
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) != 0)
		report("cannot mount devtmpfs on /dev");
	int fd = open("/dev/console", O_RDWR);
	if (fd < 0) {
		report("cannot open /dev/console");
		return;
	}
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

int main(void)
{
	open_console();
	printf("corral-init: started\n");

	cpu_set_t online;
	CPU_ZERO(&online);
	if (sched_getaffinity(0, sizeof(online), &online) == 0)
		printf("corral-init: cpus=%d\n", CPU_COUNT(&online));
	else
		printf("corral-init: cpus=unknown\n");

	const char *action = getenv("corral_init");
	int power_off = action && strcmp(action, "poweroff") == 0;
	printf("corral-init: %s\n", power_off ? "powering off" : "rebooting");
	fflush(stdout);
	/* The UART sends in the background (interrupt driven); rebooting before it is done would
	 * drop the tail of the output. */
	if (tcdrain(1) != 0)
		report("cannot drain the console");
	sync();
	reboot(power_off ? RB_POWER_OFF : RB_AUTOBOOT);
	return 1;
}
