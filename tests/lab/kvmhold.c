/*
 * kvmhold: keeps one KVM VM (with an in-kernel irqchip and one vCPU that never runs) open for
 * the life of the lab host, so that the lab kernel's KVM static keys never drop to zero.
 *
 * Why: KVM counts VMs and vCPUs in static keys (the scheduler's preempt-notifier key, which
 * __schedule tests, and the local APIC's keys). Going 0 -> 1 or 1 -> 0 rewrites kernel code
 * with text_poke_bp (int3 on the site, IPIs to the other CPUs, then the new bytes). Under QEMU
 * TCG that cross-CPU code patching can livelock: a lab froze with both of its CPUs spinning at
 * the 5-byte NOP of a jump label in __schedule (one of them in asm_exc_int3), QEMU busy, no
 * heartbeat. With this VM held the counts go 1 -> 2 -> 1 as each microVM comes and goes, and
 * the code is patched once, at lab start.
 *
 * Usage: kvmhold (prints "kvmhold: holding" on success, then sleeps until killed; exits 1
 * with a message when /dev/kvm cannot give a VM).
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        perror("kvmhold: /dev/kvm");
        return 1;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        perror("kvmhold: KVM_CREATE_VM");
        return 1;
    }
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        perror("kvmhold: KVM_CREATE_IRQCHIP (holding the VM without it)");
    if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0)
        perror("kvmhold: KVM_CREATE_VCPU (holding the VM without it)");
    printf("kvmhold: holding\n");
    fflush(stdout);
    for (;;)
        pause();
}
