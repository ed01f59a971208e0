# The deny-privileged-jobs hook's decision (NESTED_PRIVILEGED=false): run on a
# job container's OCI config.json with --arg caps (podman's default capability
# set) and --arg id (the container's ID); prints what the container asks for
# beyond podman's defaults, one reason a line, nothing for an ordinary job.
#
# Rootless podman passes host devices as bind mounts from /dev, not as
# .linux.devices (and --ipc=host the outer /dev/shm and /dev/mqueue: said as
# ipc below). A seccomp profile whose default action lets a syscall run (ALLOW,
# LOG, or TRACE/NOTIFY, where a process decides) is as good as none.
# A namespace type missing from .linux.namespaces is shared with the outer
# container (--pid=host and the like: the job would see and signal the nested
# podman, conmon and other jobs, all of the same uid; --ipc=host would give it
# the outer /dev/shm with the nested podman's lock file). The kernel refuses to
# join the outer container's namespaces by path, so only missing types need a
# look. Not the network (network_mode = "host" is a config choice that works
# unprivileged) and not the user namespace: rootless podman runs every job in
# the user namespace it runs in itself, so --userns=host is its default.
#
# Mounts: a job gets no path of the outer container but what gitlab-runner's
# own config puts there and podman's own files for this container:
def runner_or_podman_source($m):
    $m.source as $s
    # a named or anonymous volume as podman makes it (builds, caches), not a path inside one
    | (($s | startswith("{{ nested_volumes }}/"))
       and ($s | ltrimstr("{{ nested_volumes }}/") | split("/") | length == 2 and .[1] == "_data" and (.[0] | IN(".", "..") | not)))
    # podman's files for this container (hosts, resolv.conf, ..., its /dev/shm)
    or ($s | IN(("{{ nested_storage }}/storage", "/run/user/{{ podman_uid }}/containers")
                + "/overlay-containers/\($id)/userdata/" + ("hosts", "hostname", "resolv.conf", ".containerenv", "shm")))
    # the CA bundle register.env gives every job (read-only), catatonit for --init
    or ($s | IN("/etc/ssl/certs/ca-certificates.crt", "/usr/libexec/podman/catatonit"))
    # /cache: a bind of configs registered by older images (doctor warns)
    or $s == "/cache"
    # podman's own read-only /sys of a job in the host's network namespace
    or ($s == "/sys" and $m.destination == "/sys" and ($m.options // [] | index("ro")));

((.linux.namespaces // []) | map(.type)) as $ns
| (if (.linux.maskedPaths // []) == [] then "privileged (or unmask=ALL)" else
  ([(.process.capabilities // {})[][]] | unique - ($caps | split(" "))
    | select(. != []) | "capabilities beyond the default: " + join(",")),
  (select(.linux.seccomp == null) | "seccomp=unconfined"),
  (.linux.seccomp.defaultAction // empty
    | select(IN("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                "SCMP_ACT_TRAP") | not)
    | "a seccomp profile that lets unnamed syscalls run (defaultAction \(.))"),
  ([(.linux.devices // [])[].path, ((.mounts // [])[].source | select(startswith("/dev/")))]
    - (if IN($ns[]; "ipc") then [] else ["/dev/shm", "/dev/mqueue"] end)
    + [(.linux.resources.devices // [])[] | select(.allow) | "rule \(.type // "a") \(.major // "*"):\(.minor // "*")"]
    | unique | select(. != []) | "host devices: " + join(",")),
  ([(.mounts // [])[] | select(.type == "bind" or (.options // [] | index("bind") or index("rbind")))
     | select(.source | startswith("/dev/") | not) | select(runner_or_podman_source(.) | not) | .source]
    | unique | select(. != []) | "mounts from the outer container: " + join(",")),
  ([(.mounts // [])[] | select(.type == "overlay") | .options // [] | .[] | select(startswith("lowerdir="))
     | ltrimstr("lowerdir=")]
    | unique | select(. != []) | "overlay mounts of the outer container: " + join(","))
end),
([("pid", "ipc", "uts", "cgroup") | select(IN($ns[]) | not)]
  | select(. != []) | "namespaces of the outer container: " + join(","))
