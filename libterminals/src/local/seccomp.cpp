#include "local/seccomp.hpp"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace terminals::detail {

namespace {

#if defined(__x86_64__)
constexpr std::uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
constexpr std::uint32_t kArch = 0;
#endif

// Only the calls this architecture has (aarch64 lacks the legacy ones).
const std::vector<long>& denied() {
  static const std::vector<long> calls = {
#ifdef SYS_keyctl
      SYS_keyctl,
#endif
#ifdef SYS_add_key
      SYS_add_key,
#endif
#ifdef SYS_request_key
      SYS_request_key,
#endif
#ifdef SYS_io_uring_setup
      SYS_io_uring_setup,
#endif
#ifdef SYS_io_uring_enter
      SYS_io_uring_enter,
#endif
#ifdef SYS_io_uring_register
      SYS_io_uring_register,
#endif
#ifdef SYS_bpf
      SYS_bpf,
#endif
#ifdef SYS_userfaultfd
      SYS_userfaultfd,
#endif
#ifdef SYS_perf_event_open
      SYS_perf_event_open,
#endif
#ifdef SYS_init_module
      SYS_init_module,
#endif
#ifdef SYS_finit_module
      SYS_finit_module,
#endif
#ifdef SYS_delete_module
      SYS_delete_module,
#endif
#ifdef SYS_kexec_load
      SYS_kexec_load,
#endif
#ifdef SYS_kexec_file_load
      SYS_kexec_file_load,
#endif
#ifdef SYS_open_by_handle_at
      SYS_open_by_handle_at,
#endif
#ifdef SYS_name_to_handle_at
      SYS_name_to_handle_at,
#endif
#ifdef SYS_mount
      SYS_mount,
#endif
#ifdef SYS_umount2
      SYS_umount2,
#endif
#ifdef SYS_pivot_root
      SYS_pivot_root,
#endif
#ifdef SYS_unshare
      SYS_unshare,
#endif
#ifdef SYS_setns
      SYS_setns,
#endif
#ifdef SYS_fsopen
      SYS_fsopen,
#endif
#ifdef SYS_fsmount
      SYS_fsmount,
#endif
#ifdef SYS_open_tree
      SYS_open_tree,
#endif
#ifdef SYS_move_mount
      SYS_move_mount,
#endif
#ifdef SYS_acct
      SYS_acct,
#endif
#ifdef SYS_swapon
      SYS_swapon,
#endif
#ifdef SYS_swapoff
      SYS_swapoff,
#endif
#ifdef SYS_reboot
      SYS_reboot,
#endif
#ifdef SYS_settimeofday
      SYS_settimeofday,
#endif
#ifdef SYS_clock_settime
      SYS_clock_settime,
#endif
#ifdef SYS_clock_adjtime
      SYS_clock_adjtime,
#endif
#ifdef SYS_quotactl
      SYS_quotactl,
#endif
#ifdef SYS_lookup_dcookie
      SYS_lookup_dcookie,
#endif
#ifdef SYS_uselib
      SYS_uselib,
#endif
#ifdef SYS_ustat
      SYS_ustat,
#endif
#ifdef SYS_sysfs
      SYS_sysfs,
#endif
#ifdef SYS_iopl
      SYS_iopl,
#endif
#ifdef SYS_ioperm
      SYS_ioperm,
#endif
  };
  return calls;
}

sock_filter statement(std::uint16_t code, std::uint32_t k) { return BPF_STMT(code, k); }
sock_filter jump(std::uint16_t code, std::uint32_t k, std::uint8_t yes, std::uint8_t no) {
  return BPF_JUMP(code, k, yes, no);
}

}  // namespace

std::string sandbox_seccomp_program() {
  if (kArch == 0) return {};
  constexpr std::uint32_t kRefuse = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
  constexpr std::uint32_t kNoSuchCall = SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA);
  std::vector<sock_filter> f;
  f.push_back(statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  f.push_back(statement(BPF_RET | BPF_K, kNoSuchCall));
  f.push_back(statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
#if defined(__x86_64__)
  // x32 calls carry bit 30 and reach the same kernel code under other numbers.
  f.push_back(jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
  f.push_back(statement(BPF_RET | BPF_K, kNoSuchCall));
#endif
  for (long nr : denied()) {
    f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1));
    f.push_back(statement(BPF_RET | BPF_K, kRefuse));
  }
  f.push_back(statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  return std::string(reinterpret_cast<const char*>(f.data()), f.size() * sizeof(sock_filter));
}

}  // namespace terminals::detail
