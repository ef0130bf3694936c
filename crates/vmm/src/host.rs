//! Queries about the host's KVM that need no VM: vCPU limits, nested virtualization.
