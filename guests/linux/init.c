/*
 * corral's init for the real-Linux boot test: prints a marker, reports how many vCPUs Linux brought
 * online, and reboots (Linux resets through the i8042 controller, so the VMM sees a reboot).
 *
 * Sequential and fork-free on purpose: on the emulated-KVM development host each fork+exec costs
 * about a second and concurrent processes are unreliable (see README.md).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

/* The initramfs has no device nodes (building it needs no root), so init mounts devtmpfs itself
 * and takes /dev/console as stdin/stdout/stderr. */
static void open_console(void)
{
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int fd = open("/dev/console", O_RDWR);
	if (fd < 0)
		return;
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

	printf("corral-init: rebooting\n");
	fflush(stdout);
	sync();
	reboot(RB_AUTOBOOT);
	return 1;
}
