// Package egress guards keyhole's upstream connections against SSRF: every
// address is classified and checked at dial time, on the IP actually
// dialed, so neither a disguised literal nor DNS rebinding can reach
// loopback, private, link-local or cloud metadata addresses a tool was not
// allowed to reach.
package egress

import (
	"encoding/binary"
	"net/netip"
)

// Class is the kind of network an address belongs to. The zero Class is
// not a valid class and is refused.
type Class int

// Address classes. Only Public is reachable without Rules.AllowPrivate.
const (
	Public      Class = iota + 1 // globally routable unicast
	Loopback                     // 127/8, ::1
	Private                      // RFC 1918, IPv6 ULA fc00::/7, site-local fec0::/10
	CGNAT                        // 100.64/10 (RFC 6598)
	LinkLocal                    // 169.254/16, fe80::/10
	Metadata                     // cloud instance metadata endpoints
	Unspecified                  // 0.0.0.0, ::
	Multicast                    // 224/4, ff00::/8
	Broadcast                    // 255.255.255.255
	Reserved                     // special-purpose, documentation, benchmarking and unallocated ranges
)

var classNames = map[Class]string{
	Public: "public", Loopback: "loopback", Private: "private", CGNAT: "cgnat",
	LinkLocal: "link-local", Metadata: "metadata", Unspecified: "unspecified",
	Multicast: "multicast", Broadcast: "broadcast", Reserved: "reserved",
}

// String returns the class as one word ("metadata"), or "invalid".
func (c Class) String() string {
	if s, ok := classNames[c]; ok {
		return s
	}
	return "invalid"
}

type rangeClass struct {
	prefix netip.Prefix
	class  Class
}

// v4Ranges and v6Ranges are checked in order; the first match wins, so
// metadata addresses come before the ranges that contain them.
var (
	v4Ranges = []rangeClass{
		{netip.MustParsePrefix("169.254.169.254/32"), Metadata}, // AWS, GCP, Azure, OCI, ...
		{netip.MustParsePrefix("169.254.170.2/32"), Metadata},   // AWS ECS task credentials
		{netip.MustParsePrefix("169.254.170.23/32"), Metadata},  // AWS EKS Pod Identity
		{netip.MustParsePrefix("100.100.100.200/32"), Metadata}, // Alibaba Cloud
		{netip.MustParsePrefix("192.0.0.192/32"), Metadata},     // Oracle Cloud (legacy)
		{netip.MustParsePrefix("0.0.0.0/32"), Unspecified},
		{netip.MustParsePrefix("255.255.255.255/32"), Broadcast},
		{netip.MustParsePrefix("0.0.0.0/8"), Reserved},
		{netip.MustParsePrefix("127.0.0.0/8"), Loopback},
		{netip.MustParsePrefix("10.0.0.0/8"), Private},
		{netip.MustParsePrefix("172.16.0.0/12"), Private},
		{netip.MustParsePrefix("192.168.0.0/16"), Private},
		{netip.MustParsePrefix("100.64.0.0/10"), CGNAT},
		{netip.MustParsePrefix("169.254.0.0/16"), LinkLocal},
		{netip.MustParsePrefix("224.0.0.0/4"), Multicast},
		{netip.MustParsePrefix("240.0.0.0/4"), Reserved},
		{netip.MustParsePrefix("192.0.0.0/24"), Reserved},    // IETF protocol assignments
		{netip.MustParsePrefix("192.0.2.0/24"), Reserved},    // TEST-NET-1
		{netip.MustParsePrefix("192.88.99.0/24"), Reserved},  // 6to4 relay anycast
		{netip.MustParsePrefix("198.18.0.0/15"), Reserved},   // benchmarking
		{netip.MustParsePrefix("198.51.100.0/24"), Reserved}, // TEST-NET-2
		{netip.MustParsePrefix("203.0.113.0/24"), Reserved},  // TEST-NET-3
	}
	v6Ranges = []rangeClass{
		{netip.MustParsePrefix("fd00:ec2::254/128"), Metadata}, // AWS IMDS over IPv6
		{netip.MustParsePrefix("fd00:ec2::23/128"), Metadata},  // AWS EKS Pod Identity
		{netip.MustParsePrefix("::/128"), Unspecified},
		{netip.MustParsePrefix("::1/128"), Loopback},
		{netip.MustParsePrefix("fe80::/10"), LinkLocal},
		{netip.MustParsePrefix("fec0::/10"), Private}, // deprecated site-local
		{netip.MustParsePrefix("fc00::/7"), Private},  // unique local
		{netip.MustParsePrefix("ff00::/8"), Multicast},
		{netip.MustParsePrefix("2001:db8::/32"), Reserved}, // documentation
		{netip.MustParsePrefix("2001::/23"), Reserved},     // IETF protocol assignments (Teredo handled before)
		{netip.MustParsePrefix("2000::/3"), Public},
		{netip.MustParsePrefix("::/0"), Reserved}, // everything outside global unicast
	}
	// IPv6 forms that carry an IPv4 address.
	v4Compatible = netip.MustParsePrefix("::/96")
	nat64        = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour    = netip.MustParsePrefix("2002::/16")
	teredo       = netip.MustParsePrefix("2001::/32")
)

// Classify returns the class of ip. IPv6 addresses that carry an IPv4
// address are classified by that address: IPv4-mapped (::ffff:a.b.c.d),
// IPv4-compatible (::a.b.c.d, except :: and ::1), NAT64 (64:ff9b::/96, the
// last 32 bits), 6to4 (2002::/16, bits 16-47) and Teredo (2001::/32, the
// client address: the last 32 bits XOR 0xffffffff). So Classify(ip) ==
// Classify(ip.Unmap()). A zone is ignored. The invalid Addr is Reserved.
func Classify(ip netip.Addr) Class {
	if !ip.IsValid() {
		return Reserved
	}
	ip = ip.WithZone("").Unmap()
	if v4, ok := embeddedV4(ip); ok {
		ip = v4
	}
	ranges := v6Ranges
	if ip.Is4() {
		ranges = v4Ranges
	}
	for _, r := range ranges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	return Public
}

// embeddedV4 returns the IPv4 address an IPv6 address carries, if it is of
// a form that carries one. ip is unmapped and has no zone.
func embeddedV4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	a := ip.As16()
	last := [4]byte(a[12:16])
	switch {
	case v4Compatible.Contains(ip):
		if ip == netip.IPv6Unspecified() || ip == netip.IPv6Loopback() {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4(last), true
	case nat64.Contains(ip):
		return netip.AddrFrom4(last), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(a[2:6])), true
	case teredo.Contains(ip):
		var client [4]byte
		binary.BigEndian.PutUint32(client[:], binary.BigEndian.Uint32(last[:])^0xffffffff)
		return netip.AddrFrom4(client), true
	}
	return netip.Addr{}, false
}
