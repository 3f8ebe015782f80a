"""The sandbox worker's start-up: namespaces, a private /tmp, the interpreter made readable to the
sandbox uid, and probes of what the kernel allows. Stdlib only, imported by path by
sandbox_worker.py (which runs as a plain script).

Everything here changes the worker process alone (new namespaces are its own), never the host:
mounts are made private before any is added, so none propagates.
"""
import ctypes
import os
import tempfile

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x1, 0x2, 0x4, 0x1000, 0x4000, 0x40000
_MS_REMOUNT = 0x20
_MS_REMOUNT_BIND_RDONLY = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
_MNT_DETACH = 2
_PR_SET_DUMPABLE = 4
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags):
    return libc.unshare(flags) == 0


def _mount(source, target, fstype, flags, options=None):
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(options)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")


def _enter_user_namespace():
    """Non-root: an unprivileged user namespace mapping our own ids, which lets us make the
    network and mount namespaces (fails where the host disables them)."""
    uid, gid = os.getuid(), os.getgid()
    if not _unshare(_CLONE_NEWUSER):
        return False
    try:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


def _mount_namespace():
    """Our own mount table, none of whose changes propagates to the host."""
    if not _unshare(_CLONE_NEWNS):
        return False
    try:
        _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
        return True
    except OSError:
        return False


_OPTION_FLAGS = {"ro": _MS_RDONLY, "nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": 0x8,
                 "noatime": 0x400, "nodiratime": 0x800, "relatime": 0x200000}


def _mount_points():
    """(mount point, per-mount flags) from /proc/self/mountinfo, parents before children."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # "\040" is a space
            flags = sum(_OPTION_FLAGS.get(o, 0) for o in fields[5].split(","))
            out.append((point, flags))
    return out


def _read_only_host():
    """Every mount in our namespace remounted read-only (its other flags kept: a user namespace
    may not drop them), so a program cannot write any host file whatever its uid; writes go to
    the private tmpfs mounted afterwards. True when / itself became read-only."""
    root_done = False
    for point, flags in _mount_points():
        ok = libc.mount(None, point.encode(), None, _MS_REMOUNT_BIND_RDONLY | flags, None) == 0
        root_done |= ok and point == "/"
    return root_done


def _private_tmp(tmpfs_bytes):
    """Fresh tmpfs over the world-writable directories (in our mount namespace)."""
    try:
        done = 0
        for d in TMP_DIRS:
            if os.path.isdir(d):
                _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={tmpfs_bytes},mode=1777")
                done += 1
        return done > 0
    except OSError:
        return False


def probe(fn, *args):
    """Whether `fn(*args)` succeeds in a forked child (the worker keeps its uid and no filter)."""
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def drop_uid(uid, gid):
    """Become uid/gid with no supplementary groups (real, effective and saved ids)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities():
    """Empty the effective, permitted and inheritable capability sets: a child that keeps uid 0
    (no uid drop), or runs inside our user namespace, is then root in name only (it cannot raise
    its limits, override file permissions or kill other users' processes)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    if libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _read_as(uid, gid, paths):
    drop_uid(uid, gid)
    for p in paths:
        os.listdir(p)


def _may(st, uid, gid, bits):
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return (st.st_mode >> shift) & bits == bits


def _first_blocked(path, uid, gid):
    """(directory, its child on the way to `path`) for the first directory from / that the uid
    may not search; the child is None when `path` itself may not be read. None when all is open."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        last = i == len(parts)
        if not _may(os.stat(d), uid, gid, 0o5 if last else 0o1):
            return d, None if last else parts[i]
    return None


def expose(paths, uid, gid, stash_root):
    """Make `paths` (the interpreter's import path) readable by uid/gid inside our mount
    namespace. A directory the uid may not search on the way (say /root, mode 0700) is covered
    by an empty tmpfs (mode 0755) into which only the needed entries are bind-mounted back, so
    the paths are unchanged and nothing else under it is visible. Returns the paths still
    unreadable (empty on success)."""
    paths = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    for _ in range(16):
        blocked: dict[str, set] = {}
        for p in paths:
            hit = _first_blocked(p, uid, gid)
            if hit is not None:
                blocked.setdefault(hit[0], set()).add(hit[1])
        if not blocked:
            return []
        for d, children in blocked.items():
            if None in children or d == "/":
                return [d]
            stash = tempfile.mkdtemp(dir=stash_root)
            try:
                for c in children:
                    os.mkdir(os.path.join(stash, c))
                    _mount(os.path.join(d, c), os.path.join(stash, c), None, _MS_BIND | _MS_REC)
                _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=65536,mode=0755")
                for c in children:
                    os.mkdir(os.path.join(d, c))
                    _mount(os.path.join(stash, c), os.path.join(d, c), None, _MS_BIND | _MS_REC)
                    _mount(None, os.path.join(d, c), None, _MS_REMOUNT_BIND_RDONLY)
            except OSError:
                return [d]
            finally:  # the stash must hold no mount: its folder is removed with the worker's
                for c in children:
                    libc.umount2(os.path.join(stash, c).encode(), _MNT_DETACH)
    return paths


def _can_chown(base, uid, gid):
    """Whether we can give a test's working folder to the sandbox uid."""
    d = tempfile.mkdtemp(dir=base)
    try:
        os.chown(d, uid, gid)
        return True
    except OSError:
        return False
    finally:
        os.rmdir(d)


def isolate(flags, tmpfs_bytes, uid, gid, seccomp_filter, import_path):
    """Enter what namespaces the kernel allows and check the other layers; returns what holds
    (the hello frame's `isolation`) and the worker's base folder for the tests' working folders."""
    root = os.geteuid() == 0
    held = dict(root=root, user_namespace=False, net_namespace=False, mount_namespace=False,
                read_only_host=False, private_tmp=False, uid_drop=False, seccomp=False, problem=None)
    if "ns" in flags:
        if not root:
            held["user_namespace"] = _enter_user_namespace()
        if root or held["user_namespace"]:
            held["net_namespace"] = _unshare(_CLONE_NEWNET)
            held["mount_namespace"] = _mount_namespace()
            if "tmp" in flags and held["mount_namespace"]:
                # read-only first, then the fresh tmpfs (writable) on top; without a private tmp the
                # worker needs the host's, so the host stays writable (to the uid's permissions)
                held["read_only_host"] = _read_only_host()
                held["private_tmp"] = _private_tmp(tmpfs_bytes)
    base = tempfile.mkdtemp(prefix="bstar-sandbox-")
    os.chmod(base, 0o711)
    if root and "uid" in flags and probe(drop_uid, uid, gid) and _can_chown(base, uid, gid):
        # (root without CAP_SETUID/CAP_SETGID or CAP_CHOWN cannot: then no uid drop, no problem)
        paths = [p for p in import_path if os.path.isdir(p)]
        unreadable = [] if probe(_read_as, uid, gid, paths) else paths
        if unreadable and held["mount_namespace"]:
            unreadable = expose(paths, uid, gid, base)
        held["uid_drop"] = not unreadable and probe(_read_as, uid, gid, paths)
        if not held["uid_drop"]:
            held["problem"] = (f"uid {uid} cannot read the interpreter's files "
                               f"({', '.join(unreadable or paths)})"
                               + ("" if held["mount_namespace"] else " and, without a mount namespace, "
                                  "they cannot be exposed to it"))
    if seccomp_filter is not None:
        held["seccomp"] = probe(seccomp_filter.install, libc)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid children cannot ptrace or read our memory
    return held, base
