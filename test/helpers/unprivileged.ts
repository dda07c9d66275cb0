/**
 * Running the daemon as the units do, without systemd: as nobody (65534)
 * holding only CAP_NET_ADMIN (ambient, inherited by its children).
 */

/** setpriv arguments: nobody, no groups, CAP_NET_ADMIN only. */
export const NOBODY_NET_ADMIN = [
  '--reuid=65534',
  '--regid=65534',
  '--clear-groups',
  '--inh-caps=-all,+net_admin',
  '--ambient-caps=-all,+net_admin',
  '--bounding-set=-all,+net_admin',
];

/**
 * A `sh -c` script, for the mount namespace `ip netns exec` makes, that gives
 * nobody a control socket directory of its own and /dev/net/tun with the
 * mode udev gives it on Debian (0666; some hosts, this test machine among
 * them, lack it and CAP_NET_ADMIN does not override modes), then runs
 * `setpriv "$@"`. Spawn as: sh -c SCRIPT sh ...NOBODY_NET_ADMIN CMD ARGS.
 */
export const AS_NOBODY_SCRIPT = [
  'mkdir -p /run/wireguard /run/tunvpn-dev',
  'mount -t tmpfs -o size=1m,mode=0755,uid=65534,gid=65534 tunvpn-test /run/wireguard',
  'mount -t tmpfs -o size=64k,mode=0755 tunvpn-dev /run/tunvpn-dev',
  'mknod -m 0666 /run/tunvpn-dev/tun c 10 200',
  'mount --bind /run/tunvpn-dev/tun /dev/net/tun',
  'exec setpriv "$@"',
].join(' && ');
