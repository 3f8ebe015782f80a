"""The sandboxed child's seccomp filter: which system calls an untrusted program may not make.

Stdlib only: the sandbox worker (sandbox_worker.py) runs as a plain script and imports this file
by path. The filter is classic BPF over `struct seccomp_data`, built per child because the
signal rules name the child's own pid: the worker builds it once, each
child writes its pid into the three instructions that name it (cheap after a fork). Denied calls fail with EPERM (the program sees an
OSError, nothing is killed), except clone3, which fails with ENOSYS so that glibc falls back to
clone, whose flags a filter can read (clone3 keeps them in memory it cannot).

What the filter stops, whatever the uid:
- new processes: fork, vfork, clone without CLONE_THREAD (threads stay allowed), exec;
- sockets: socket() of any family (socketpair, which reaches nothing outside, stays allowed);
- touching other processes: kill/tgkill/tkill/rt_*sigqueueinfo aimed at any pid but the
  child's own (or its own process group), pidfd_*, ptrace, process_vm_readv/writev;
- kernel surfaces a program never needs: namespaces (unshare, setns), mounts, bpf, io_uring,
  userfaultfd, perf_event_open, keyrings, module loading, kexec, file handles;
- any other ABI on the same kernel (i386 via int 0x80, x32): the arch must match.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_CLONE_THREAD = 0x00010000

# System call numbers: x86_64 (asm/unistd_64.h) and aarch64 (asm-generic/unistd.h).
_NR = {
    "x86_64": dict(socket=41, clone=56, fork=57, vfork=58, execve=59, kill=62, ptrace=101, tkill=200,
                   tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, process_vm_readv=310,
                   process_vm_writev=311, execveat=322, pidfd_open=434, pidfd_send_signal=424,
                   pidfd_getfd=438, clone3=435, unshare=272, setns=308, mount=165, umount2=166,
                   pivot_root=155, chroot=161, bpf=321, userfaultfd=323, perf_event_open=298,
                   keyctl=250, add_key=248, request_key=249, io_uring_setup=425, io_uring_enter=426,
                   io_uring_register=427, kexec_load=246, init_module=175, finit_module=313,
                   open_by_handle_at=304, name_to_handle_at=303, open_tree=428, move_mount=429,
                   fsopen=430, fsconfig=431, fsmount=432, fspick=433),
    "aarch64": dict(socket=198, clone=220, execve=221, kill=129, ptrace=117, tkill=130, tgkill=131,
                    rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, process_vm_readv=270,
                    process_vm_writev=271, execveat=281, pidfd_open=434, pidfd_send_signal=424,
                    pidfd_getfd=438, clone3=435, unshare=97, setns=268, mount=40, umount2=39,
                    pivot_root=41, chroot=51, bpf=280, userfaultfd=282, perf_event_open=241,
                    keyctl=219, add_key=217, request_key=218, io_uring_setup=425, io_uring_enter=426,
                    io_uring_register=427, kexec_load=104, init_module=105, finit_module=273,
                    open_by_handle_at=265, name_to_handle_at=264, open_tree=428, move_mount=429,
                    fsopen=430, fsconfig=431, fsmount=432, fspick=433),
}
_SIGNALLERS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
_SPECIAL = ("clone", "clone3") + _SIGNALLERS

# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # low 32 bits of args[0] (little-endian)
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def supported() -> bool:
    """Whether this machine's architecture has a filter here (x86_64, aarch64)."""
    return platform.machine() in _NR


def build_filter(pid: int) -> bytes:
    """The filter's instructions for the process `pid` (struct sock_filter array, packed); the
    instructions naming the pid are the ones _pid_slots finds."""
    machine = platform.machine()
    nr = _NR[machine]
    prog: list[tuple[int, object, object, int]] = []  # (code, jt, jf, k); jt/jf may be labels
    labels: dict[str, int] = {}

    def emit(code, k, jt=0, jf=0):
        prog.append((code, jt, jf, k))

    def label(name):
        labels[name] = len(prog)

    emit(_LD_W_ABS, _OFF_ARCH)
    emit(_JEQ, _AUDIT_ARCH[machine], 0, "deny")
    emit(_LD_W_ABS, _OFF_NR)
    if machine == "x86_64":
        emit(_JGE, _X32_SYSCALL_BIT, "deny", 0)
    emit(_JEQ, nr["clone"], "clone", 0)
    emit(_JEQ, nr["clone3"], "enosys", 0)
    for name in _SIGNALLERS:
        emit(_JEQ, nr[name], "signal", 0)
    for name, number in nr.items():
        if name not in _SPECIAL:
            emit(_JEQ, number, "deny", 0)
    emit(_RET, _RET_ALLOW)
    label("clone")
    emit(_LD_W_ABS, _OFF_ARG0)
    emit(_JSET, _CLONE_THREAD, "allow", "deny")
    label("signal")  # the first argument is the target pid (tgid for tgkill): only ourselves
    emit(_LD_W_ABS, _OFF_ARG0)
    emit(_JEQ, pid, "allow", 0)
    emit(_JEQ, 0, "allow", 0)  # kill(0, sig): our own process group, which is only us
    emit(_JEQ, (-pid) & 0xFFFFFFFF, "allow", "deny")
    label("allow")  # BPF jumps only forward, so the returns come last
    emit(_RET, _RET_ALLOW)
    label("deny")
    emit(_RET, _RET_ERRNO | errno.EPERM)
    label("enosys")
    emit(_RET, _RET_ERRNO | errno.ENOSYS)

    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        assert 0 <= jt < 256 and 0 <= jf < 256, "seccomp filter jump out of range"
        out.append(struct.pack("=HBBI", code, jt, jf, k))
    return b"".join(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _pid_slots(template: bytes, pid: int) -> list[tuple[int, int]]:
    """(byte offset of k, value as a function of pid: +1 for pid, -1 for -pid) per pid instruction."""
    slots = []
    for i in range(0, len(template), 8):
        code, _, _, k = struct.unpack_from("=HBBI", template, i)
        if code == _JEQ and k in (pid, (-pid) & 0xFFFFFFFF):
            slots.append((i + 4, 1 if k == pid else -1))
    return slots


class Filter:
    """The filter built once in the worker (in C memory), installed by each forked child."""

    _PLACEHOLDER = 0x7FFFFFF0  # no real pid: pid_max is at most 2**22

    def __init__(self):
        code = build_filter(self._PLACEHOLDER)
        self._slots = _pid_slots(code, self._PLACEHOLDER)
        assert len(self._slots) == 2, self._slots
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = _SockFprog(len(code) // 8, ctypes.cast(self._buf, ctypes.c_void_p))

    def install(self, libc) -> None:
        """Install on the calling (single-threaded) process; raises OSError on failure. Sets
        no_new_privs first, which an unprivileged process needs and which also keeps setuid
        binaries from gaining anything."""
        pid = os.getpid()
        for offset, sign in self._slots:
            struct.pack_into("=I", self._buf, offset, (sign * pid) & 0xFFFFFFFF)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
