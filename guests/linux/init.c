/*
 * corral's init for the real-Linux boot test: prints a marker, reports how many vCPUs Linux brought
 * online, and reboots (Linux resets through the i8042 controller, so the VMM sees a reboot) — or,
 * with `corral_init=poweroff` on the kernel command line (Linux hands it to init as an environment
 * variable), powers off (through ACPI S5 when the kernel has ACPI).
 *
 * With the virtio kernel (guest-net.config) these steps run when asked on the command line:
 * - `corral_disk=vda`: mount /dev/vda (ext4) on /mnt, print /mnt/hello.txt, write
 *   /mnt/from-guest.txt, unmount;
 * - `corral_net=10.0.2.2 corral_peer=10.0.2.1`: give eth0 the address (/24), bring it up and
 *   ping the peer (ICMP echo over a raw socket);
 * - `corral_seed=1`: find the disk whose vfat label is CIDATA (a cloud-init NoCloud seed), mount
 *   it read-only and print meta-data's `instance-id:` line,
 * - `corral_vsock=6000`: connect to the host's vsock port 6000, send a line and print the answer,
 *   then listen on vsock port 5000 for one host connection and answer its "ping" with "pong";
 * - `corral_identity=vda,vdb`: mount the root disk vda and the tools disk vdb (corral and its
 *   libraries), run `corral guest machine-id --ensure` on vda's root and print the id, vda's
 *   /etc/hostname and eth0's MAC (the clone test boots two clones this way);
 * - `corral_agent=vdb`: mount the tools disk vdb (corral, its libraries, a static busybox) and
 *   /proc, run busybox `true` twice (bounded: the emulator's first victims), run `corral guest
 *   agent` on vsock port 1024 (started again, up to 5 times, when it dies) and serve until the
 *   agent asks init to power off (SIGUSR2, as busybox init is asked), then end as below (this kernel has no ACPI,
 *   so it cannot power off: without `corral_init=poweroff` it reboots, which ends a VM run with
 *   `--on-reboot destroy`);
 * - `corral_fill=vda:R`: mount /dev/vda (ext4) on /mnt and write files `rR-N` (64 KiB each, byte
 *   i of file N is (N * 31 + i) & 0xff) forever, each fsynced with its directory, printing
 *   "synced N" after each: the crash test kills the VMM meanwhile and checks what was synced.
 *
 * Sequential, and forking only where a step runs corral itself: on the emulated-KVM development
 * host each fork+exec costs about a second and concurrent processes are unreliable (see README.md).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/mman.h>
#include <dirent.h>
#include <sys/reboot.h>
#include <poll.h>
#include <termios.h>
#include <linux/vm_sockets.h>
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

/* Mounts the ext4 disk, reads the host's file and writes one back. */
static void disk_step(const char *disk)
{
	char device[32], text[128];
	snprintf(device, sizeof(device), "/dev/%s", disk);
	mkdir("/mnt", 0755);
	if (mount(device, "/mnt", "ext4", 0, NULL) != 0) {
		printf("corral-init: mount %s failed: %s\n", device, strerror(errno));
		return;
	}
	int fd = open("/mnt/hello.txt", O_RDONLY);
	ssize_t len = fd < 0 ? -1 : read(fd, text, sizeof(text) - 1);
	if (fd >= 0)
		close(fd);
	if (len < 0) {
		printf("corral-init: cannot read /mnt/hello.txt: %s\n", strerror(errno));
	} else {
		text[len] = 0;
		text[strcspn(text, "\n")] = 0;
		printf("corral-init: read hello.txt: %s\n", text);
	}
	static const char message[] = "written by the guest over virtio-blk\n";
	fd = open("/mnt/from-guest.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, message, sizeof(message) - 1) != sizeof(message) - 1 || fsync(fd) != 0)
		printf("corral-init: cannot write /mnt/from-guest.txt: %s\n", strerror(errno));
	else
		printf("corral-init: wrote from-guest.txt\n");
	if (fd >= 0)
		close(fd);
	if (umount("/mnt") != 0)
		printf("corral-init: umount failed: %s\n", strerror(errno));
}

/* Writes synced files on the ext4 disk until the VM is killed. */
static void fill_step(const char *spec)
{
	char device[32], path[64];
	unsigned round = 0;
	const char *colon = strchr(spec, ':');
	if (colon)
		round = (unsigned)atoi(colon + 1);
	int name_len = colon ? (int)(colon - spec) : (int)strlen(spec);
	snprintf(device, sizeof(device), "/dev/%.*s", name_len, spec);
	mkdir("/mnt", 0755);
	if (mount(device, "/mnt", "ext4", 0, NULL) != 0) {
		printf("corral-init: mount %s failed: %s\n", device, strerror(errno));
		return;
	}
	printf("corral-init: filling %s\n", device);
	fflush(stdout);
	static unsigned char block[65536];
	int dir = open("/mnt", O_RDONLY | O_DIRECTORY);
	for (unsigned n = 0;; n++) {
		for (size_t i = 0; i < sizeof(block); i++)
			block[i] = (unsigned char)(n * 31 + i);
		snprintf(path, sizeof(path), "/mnt/r%u-%u", round, n);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, block, sizeof(block)) != (ssize_t)sizeof(block) ||
		    fsync(fd) != 0 || fsync(dir) != 0) {
			printf("corral-init: cannot write %s: %s\n", path, strerror(errno));
			fflush(stdout);
			return;
		}
		close(fd);
		printf("corral-init: synced %u\n", n);
		fflush(stdout);
	}
}

static int interface_ioctl(int sock, unsigned long request, struct ifreq *ifr)
{
	if (ioctl(sock, request, ifr) != 0) {
		printf("corral-init: eth0 ioctl %#lx failed: %s\n", request, strerror(errno));
		return -1;
	}
	return 0;
}

static unsigned short icmp_checksum(const void *data, size_t len)
{
	const unsigned char *bytes = data;
	unsigned long sum = 0;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (unsigned long)(bytes[i] << 8 | bytes[i + 1]);
	if (len & 1)
		sum += (unsigned long)bytes[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((unsigned short)~sum);
}

/* Configures eth0 and pings the peer; prints the result. */
static void net_step(const char *address, const char *peer)
{
	int sock = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "eth0");
	struct sockaddr_in *in = (struct sockaddr_in *)&ifr.ifr_addr;
	in->sin_family = AF_INET;
	if (sock < 0 || inet_pton(AF_INET, address, &in->sin_addr) != 1 ||
	    interface_ioctl(sock, SIOCSIFADDR, &ifr) != 0)
		return;
	inet_pton(AF_INET, "255.255.255.0", &in->sin_addr);
	if (interface_ioctl(sock, SIOCSIFNETMASK, &ifr) != 0 ||
	    interface_ioctl(sock, SIOCGIFFLAGS, &ifr) != 0)
		return;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (interface_ioctl(sock, SIOCSIFFLAGS, &ifr) != 0)
		return;
	close(sock);
	printf("corral-init: eth0 up with %s\n", address);

	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	struct timeval timeout = { .tv_sec = 10 };
	struct sockaddr_in to = { .sin_family = AF_INET };
	if (raw < 0 || inet_pton(AF_INET, peer, &to.sin_addr) != 1 ||
	    setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
		printf("corral-init: cannot open an ICMP socket: %s\n", strerror(errno));
		return;
	}
	for (int attempt = 1; attempt <= 3; attempt++) {
		struct icmphdr echo = { .type = ICMP_ECHO };
		echo.un.echo.id = htons(0x4352);
		echo.un.echo.sequence = htons((unsigned short)attempt);
		echo.checksum = icmp_checksum(&echo, sizeof(echo));
		if (sendto(raw, &echo, sizeof(echo), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
			printf("corral-init: ping send failed: %s\n", strerror(errno));
			continue;
		}
		unsigned char reply[128];
		ssize_t len;
		while ((len = recv(raw, reply, sizeof(reply), 0)) > 0) {
			struct iphdr *ip = (struct iphdr *)reply;
			struct icmphdr *icmp = (struct icmphdr *)(reply + ip->ihl * 4);
			if (len >= (ssize_t)(ip->ihl * 4 + sizeof(*icmp)) && icmp->type == ICMP_ECHOREPLY &&
			    icmp->un.echo.id == htons(0x4352) && ip->saddr == to.sin_addr.s_addr) {
				printf("corral-init: ping %s ok\n", peer);
				close(raw);
				return;
			}
		}
	}
	printf("corral-init: ping %s failed\n", peer);
	close(raw);
}

/* Runs `program` with `argv`, its stdout into `out` (one line, the newline dropped); 0 when it
 * exited 0. */
static int run_for_line(const char *program, char *const argv[], char *out, size_t size)
{
	int pipe_fds[2];
	if (pipe(pipe_fds) != 0)
		return -1;
	pid_t child = fork();
	if (child == 0) {
		dup2(pipe_fds[1], 1);
		close(pipe_fds[0]);
		close(pipe_fds[1]);
		execv(program, argv);
		_exit(127);
	}
	close(pipe_fds[1]);
	ssize_t len = child < 0 ? -1 : read(pipe_fds[0], out, size - 1);
	close(pipe_fds[0]);
	int status = -1;
	if (child > 0)
		waitpid(child, &status, 0);
	out[len > 0 ? len : 0] = 0;
	out[strcspn(out, "\n")] = 0;
	return len > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Reads the regular file at FD into the page cache. On the emulated-KVM development host a
 * program that sleeps in a page fault (its page still on the disk) early on can resume with a
 * wrong thread pointer: the first run of corral after boot misparsed its arguments, the same
 * command from a warm page cache never did (guests/linux/README.md). MAP_POPULATE makes the
 * kernel read the pages without copying them to us. */
static void warm_file(int fd)
{
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (map != MAP_FAILED)
			munmap(map, (size_t)st.st_size);
	}
}

/* Reads every regular file in DIR (not below; symbolic links skipped) into the page cache
 * before any of them runs. */
static void warm_page_cache(const char *dir)
{
	DIR *entries = opendir(dir);
	struct dirent *entry;
	while (entries && (entry = readdir(entries))) {
		int fd = openat(dirfd(entries), entry->d_name, O_RDONLY | O_NOFOLLOW);
		if (fd >= 0) {
			warm_file(fd);
			close(fd);
		}
	}
	if (entries)
		closedir(entries);
}

/* `warm PATH...` (this program run under the name warm, e.g. from the cgroup v2 guest's
 * init script): each directory's files, or each file, into the page cache. */
static int warm_main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			warm_page_cache(argv[i]);
		} else {
			int fd = open(argv[i], O_RDONLY);
			if (fd < 0) {
				fprintf(stderr, "warm: %s: %s\n", argv[i], strerror(errno));
				return 1;
			}
			warm_file(fd);
			close(fd);
		}
	}
	return 0;
}

/* A clone's first boot: mounts its root disk ROOT on /mnt and the read-only tools disk TOOLS
 * (corral and the libraries it needs) on /tools, lets `corral guest machine-id --ensure` make
 * the machine-id the clone's identity reset left empty (systemd's first-boot job), and prints
 * the id, the disk's hostname and eth0's MAC. */
static void identity_step(const char *spec)
{
	char root[32], tools[32], line[128];
	const char *comma = strchr(spec, ',');
	if (!comma) {
		printf("corral-init: corral_identity wants ROOT,TOOLS\n");
		return;
	}
	snprintf(root, sizeof(root), "/dev/%.*s", (int)(comma - spec), spec);
	snprintf(tools, sizeof(tools), "/dev/%s", comma + 1);
	mkdir("/mnt", 0755);
	mkdir("/tools", 0755);
	if (mount(root, "/mnt", "ext4", 0, NULL) != 0 ||
	    mount(tools, "/tools", "ext4", MS_RDONLY, NULL) != 0) {
		printf("corral-init: mounting %s and %s failed: %s\n", root, tools, strerror(errno));
		return;
	}
	warm_page_cache("/tools");
	warm_page_cache("/tools/lib");
	char *const argv[] = { "ld.so", "--library-path", "/tools/lib", "/tools/corral", "guest",
			       "machine-id", "--ensure", "--root", "/mnt", NULL };
	if (run_for_line("/tools/lib/ld-linux-x86-64.so.2", argv, line, sizeof(line)) == 0)
		printf("corral-init: machine-id %s\n", line);
	else
		printf("corral-init: corral guest machine-id --ensure failed: %s\n", line);
	int fd = open("/mnt/etc/hostname", O_RDONLY);
	ssize_t len = fd < 0 ? -1 : read(fd, line, sizeof(line) - 1);
	if (fd >= 0)
		close(fd);
	line[len > 0 ? len : 0] = 0;
	line[strcspn(line, "\n")] = 0;
	printf("corral-init: hostname %s\n", line);
	int sock = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "eth0");
	if (sock >= 0 && interface_ioctl(sock, SIOCGIFHWADDR, &ifr) == 0) {
		const unsigned char *mac = (const unsigned char *)ifr.ifr_hwaddr.sa_data;
		printf("corral-init: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2],
		       mac[3], mac[4], mac[5]);
	}
	if (sock >= 0)
		close(sock);
	sync();
	if (umount("/mnt") != 0 || umount("/tools") != 0)
		printf("corral-init: umount failed: %s\n", strerror(errno));
}

static volatile sig_atomic_t power_off_asked;

static void ask_power_off(int signal)
{
	(void)signal;
	power_off_asked = 1;
}

/* Runs PROGRAM with ARGV and waits at most SECONDS for it; 0 when it exited 0. A program this
 * host's emulator wedged is killed, so init goes on. */
static int run_bounded(const char *program, char *const argv[], unsigned seconds)
{
	pid_t child = fork();
	if (child == 0) {
		execv(program, argv);
		_exit(127);
	}
	if (child < 0)
		return -1;
	for (unsigned tenths = 0; tenths < seconds * 10; tenths++) {
		int status;
		pid_t ended = waitpid(child, &status, WNOHANG);
		if (ended == child)
			return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
		usleep(100000);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return -1;
}

/* Starts `corral guest agent --vsock-port 1024` from the tools disk; its pid, or -1. */
static pid_t start_agent(void)
{
	pid_t agent = fork();
	if (agent == 0) {
		char *const argv[] = { "ld.so", "--library-path", "/tools/lib", "/tools/corral", "guest",
				       "agent", "--vsock-port", "1024", NULL };
		/* CORRAL_LOG=info: the agent says on the console when it listens. */
		char *const envp[] = { "PATH=/tools/bin", "CORRAL_LOG=info", NULL };
		/* A static corral (scripts/build-static.sh) comes without /tools/lib. */
		if (access("/tools/lib/ld-linux-x86-64.so.2", X_OK) != 0)
			execve("/tools/corral", (char *const *)argv + 3, envp);
		execve("/tools/lib/ld-linux-x86-64.so.2", argv, envp);
		_exit(127);
	}
	if (agent < 0)
		report("cannot start the agent");
	else
		printf("corral-init: agent started\n");
	fflush(stdout);
	return agent;
}

/* How often init starts the agent again after it died (of the emulator's faults, see
 * README.md) before it gives up and ends the machine. */
#define AGENT_STARTS 5

/* The guest agent: mounts the read-only tools disk TOOLS (corral, its libraries and a static
 * busybox) on /tools and /proc, runs `corral guest agent --vsock-port 1024` and serves until
 * the agent asks init to power off the way busybox init is asked (SIGUSR2). Returns when it
 * has; init then ends the machine. */
static void agent_step(const char *tools_disk)
{
	char tools[32];
	snprintf(tools, sizeof(tools), "/dev/%s", tools_disk);
	mkdir("/tools", 0755);
	mkdir("/proc", 0555);
	mkdir("/tmp", 01777);
	if (mount(tools, "/tools", "ext4", MS_RDONLY, NULL) != 0 ||
	    mount("proc", "/proc", "proc", 0, NULL) != 0) {
		printf("corral-init: mounting %s and /proc failed: %s\n", tools, strerror(errno));
		return;
	}
	/* The ptys of `corral exec --tty`; without them only that fails. */
	mkdir("/dev/pts", 0755);
	if (mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666") != 0)
		printf("corral-init: mounting /dev/pts failed: %s\n", strerror(errno));
	warm_page_cache("/tools");
	warm_page_cache("/tools/lib");
	warm_page_cache("/tools/bin");
	/* The first busybox processes after boot are the ones this host's emulator most often
	 * kills or wedges (README.md): init pays for them, bounded, before any command of the
	 * host's runs. */
	char *const warm_up[] = { "true", NULL };
	for (int run = 1; run <= 2; run++)
		if (run_bounded("/tools/bin/true", warm_up, 20) != 0)
			printf("corral-init: warm-up run %d of busybox failed\n", run);
	struct sigaction on_usr2 = { .sa_handler = ask_power_off };
	sigaction(SIGUSR2, &on_usr2, NULL);
	pid_t agent = start_agent();
	int starts = 1;
	/* Init reaps every orphan, as pid 1 must; the agent's own end is reported, and it is
	 * started again (the host's test sees the restart on the console). */
	while (!power_off_asked && agent > 0) {
		int status;
		pid_t ended = wait(&status);
		if (ended == agent) {
			printf("corral-init: the agent ended (status %d)\n", status);
			fflush(stdout);
			if (power_off_asked || starts == AGENT_STARTS)
				break;
			agent = start_agent();
			starts++;
		} else if (ended < 0 && errno == ECHILD) {
			pause();
		}
	}
	if (power_off_asked)
		printf("corral-init: power-off asked\n");
}

/* Reads one line (without the newline) from `fd`. */
static int read_line(int fd, char *line, size_t size)
{
	size_t len = 0;
	while (len + 1 < size) {
		ssize_t got = read(fd, line + len, 1);
		if (got <= 0)
			return -1;
		if (line[len] == '\n')
			break;
		len++;
	}
	line[len] = 0;
	return 0;
}

/* Whether the FAT boot sector in `sector` carries volume label `label` (11 bytes, space padded):
 * at byte 43 on FAT12/16, at byte 71 on FAT32 (whose sectors-per-FAT at byte 22 is zero). */
static int fat_label_is(const unsigned char *sector, const char *label)
{
	if (sector[510] != 0x55 || sector[511] != 0xaa)
		return 0;
	int fat32 = sector[22] == 0 && sector[23] == 0;
	return memcmp(sector + (fat32 ? 71 : 43), label, 11) == 0;
}

/* cloud-init's NoCloud search, by hand: finds the virtio disk whose vfat label is CIDATA,
 * mounts it read-only on /seed and prints meta-data's instance-id. */
static void seed_step(void)
{
	char device[32], line[256];
	unsigned char sector[512];
	int found = 0;
	for (char letter = 'a'; letter <= 'h' && !found; letter++) {
		snprintf(device, sizeof(device), "/dev/vd%c", letter);
		int fd = open(device, O_RDONLY);
		if (fd < 0)
			continue;
		found = read(fd, sector, sizeof(sector)) == sizeof(sector) &&
			fat_label_is(sector, "CIDATA     ");
		close(fd);
	}
	if (!found) {
		printf("corral-init: no disk labelled CIDATA\n");
		return;
	}
	mkdir("/seed", 0755);
	if (mount(device, "/seed", "vfat", MS_RDONLY, NULL) != 0) {
		printf("corral-init: mount %s (vfat) failed: %s\n", device, strerror(errno));
		return;
	}
	printf("corral-init: seed on %s\n", device);
	int fd = open("/seed/meta-data", O_RDONLY);
	int printed = 0;
	while (fd >= 0 && read_line(fd, line, sizeof(line)) == 0) {
		if (strncmp(line, "instance-id:", 12) == 0) {
			printf("corral-init: seed %s\n", line);
			printed = 1;
		}
	}
	if (!printed)
		printf("corral-init: the seed's meta-data has no instance-id\n");
	if (fd >= 0)
		close(fd);
	if (umount("/seed") != 0)
		printf("corral-init: umount /seed failed: %s\n", strerror(errno));
}

/* A connection to the host and one from it, over virtio-vsock. */
static void vsock_step(unsigned port)
{
	char line[64];
	struct sockaddr_vm host = {
		.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port
	};
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	static const char hello[] = "hello from linux\n";
	/* Linux gives a vsock connect 2 s by default; under the instruction emulator the guest's own
	 * handling of the host's answer can take longer than that on a loaded host. */
	struct timeval patience = { .tv_sec = 60 };
	if (fd >= 0 &&
	    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &patience, sizeof(patience)) != 0)
		report("cannot lengthen the vsock connect timeout");
	if (fd < 0 || connect(fd, (struct sockaddr *)&host, sizeof(host)) != 0 ||
	    write(fd, hello, sizeof(hello) - 1) != sizeof(hello) - 1 ||
	    read_line(fd, line, sizeof(line)) != 0) {
		printf("corral-init: vsock connection to the host failed: %s\n", strerror(errno));
	} else {
		printf("corral-init: vsock host said: %s\n", line);
	}
	if (fd >= 0)
		close(fd);

	struct sockaddr_vm any = {
		.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = 5000
	};
	int listener = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&any, sizeof(any)) != 0 ||
	    listen(listener, 1) != 0) {
		printf("corral-init: cannot listen on vsock port 5000: %s\n", strerror(errno));
		return;
	}
	printf("corral-init: vsock listening on 5000\n");
	fflush(stdout);
	struct pollfd ready = { .fd = listener, .events = POLLIN };
	int client = poll(&ready, 1, 60000) == 1 ? accept(listener, NULL, NULL) : -1;
	if (client < 0 || read_line(client, line, sizeof(line)) != 0 || strcmp(line, "ping") != 0 ||
	    write(client, "pong\n", 5) != 5)
		printf("corral-init: no ping from the host over vsock\n");
	else
		printf("corral-init: vsock answered the host\n");
	if (client >= 0)
		close(client);
	close(listener);
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/');
	if (strcmp(name ? name + 1 : argv[0], "warm") == 0)
		return warm_main(argc, argv);
	open_console();
	printf("corral-init: started\n");

	cpu_set_t online;
	CPU_ZERO(&online);
	if (sched_getaffinity(0, sizeof(online), &online) == 0)
		printf("corral-init: cpus=%d\n", CPU_COUNT(&online));
	else
		printf("corral-init: cpus=unknown\n");

	const char *disk = getenv("corral_disk");
	if (disk)
		disk_step(disk);
	const char *fill = getenv("corral_fill");
	if (fill)
		fill_step(fill);
	const char *address = getenv("corral_net"), *peer = getenv("corral_peer");
	if (address && peer)
		net_step(address, peer);
	const char *identity = getenv("corral_identity");
	if (identity)
		identity_step(identity);
	if (getenv("corral_seed"))
		seed_step();
	const char *vsock_port = getenv("corral_vsock");
	if (vsock_port)
		vsock_step((unsigned)atoi(vsock_port));

	const char *agent_tools = getenv("corral_agent");
	if (agent_tools)
		agent_step(agent_tools);

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
