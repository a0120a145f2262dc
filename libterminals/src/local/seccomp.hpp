#pragma once

// The system call filter of the local sandbox, as bubblewrap's --seccomp reads it: a classic
// BPF program (struct sock_filter[], native byte order), applied to the agent and everything it
// starts. A deny list, after Docker's default profile: calls no terminal needs whose kernel code
// is a frequent way in (keyrings, io_uring, bpf, userfaultfd, perf events, module and kexec
// loading, mounts and namespaces, clock and swap changes), refused with EPERM. Another ABI than
// the build's own (i386 or x32 on x86_64) gets ENOSYS: its numbers would slip past the list.

#include <string>

namespace terminals::detail {

/// The program's bytes; empty on an architecture this build has no numbers for (then no
/// filter is applied).
std::string sandbox_seccomp_program();

}  // namespace terminals::detail
