#include "common/virtio.h"
void guest_run(const struct boot_info *boot) { (void)boot; debug_exit(1); }
