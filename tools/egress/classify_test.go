package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr string
		want Class
	}{
		{"93.184.216.34", Public},
		{"8.8.8.8", Public},
		{"1.1.1.1", Public},
		{"2606:4700:4700::1111", Public},
		{"2a00:1450:4001:80b::200e", Public},
		{"127.0.0.1", Loopback},
		{"127.255.255.254", Loopback},
		{"::1", Loopback},
		{"::ffff:127.0.0.1", Loopback},
		{"10.0.0.1", Private},
		{"10.255.255.255", Private},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"172.32.0.1", Public},
		{"192.168.1.1", Private},
		{"fc00::1", Private},
		{"fd12:3456::1", Private},
		{"fec0::1", Private},
		{"100.64.0.1", CGNAT},
		{"100.127.255.255", CGNAT},
		{"100.128.0.1", Public},
		{"169.254.1.1", LinkLocal},
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"169.254.169.254", Metadata},
		{"169.254.170.2", Metadata},
		{"100.100.100.200", Metadata},
		{"fd00:ec2::254", Metadata},
		{"::ffff:169.254.169.254", Metadata},
		{"64:ff9b::a9fe:a9fe", Metadata},
		{"2002:a9fe:a9fe::1", Metadata},
		{"0.0.0.0", Unspecified},
		{"::", Unspecified},
		{"::ffff:0.0.0.0", Unspecified},
		{"224.0.0.1", Multicast},
		{"239.255.255.250", Multicast},
		{"ff02::1", Multicast},
		{"255.255.255.255", Broadcast},
		{"0.1.2.3", Reserved},
		{"240.0.0.1", Reserved},
		{"192.0.0.8", Reserved},
		{"192.0.2.1", Reserved},
		{"198.18.0.1", Reserved},
		{"198.51.100.7", Reserved},
		{"203.0.113.9", Reserved},
		{"2001:db8::1", Reserved},
		{"100::1", Reserved},
		{"::127.0.0.1", Loopback}, // IPv4-compatible
		{"::10.1.2.3", Private},
		{"64:ff9b::7f00:1", Loopback},
		{"64:ff9b::808:808", Public},
		{"64:ff9b:1::1", Reserved},
		{"2002:7f00:1::", Loopback},
		{"2002:0a00:0001::1", Private},
		{"2002:5db8:d822::1", Public},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback}, // Teredo, client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public},   // Teredo, client 8.8.8.8
		{"2001:0:4136:e378:8000:63bf:5601:5601", Metadata}, // Teredo, client 169.254.169.254
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.addr)
			if got := Classify(ip); got != tc.want {
				t.Fatalf("Classify(%s) = %s, want %s", tc.addr, got, tc.want)
			}
			if got, want := Classify(ip.Unmap()), Classify(ip); got != want {
				t.Fatalf("Classify(%s.Unmap()) = %s, want %s", tc.addr, got, want)
			}
		})
	}
	if got := Classify(netip.Addr{}); got != Reserved {
		t.Fatalf("Classify(invalid) = %s, want reserved", got)
	}
}

func TestRulesCheck(t *testing.T) {
	none, private, metadata, metaOnly := Rules{}, Rules{AllowPrivate: true}, Rules{AllowPrivate: true, AllowMetadata: true}, Rules{AllowMetadata: true}
	tests := []struct {
		addr    string
		rules   Rules
		refused string // class named in the error, "" if allowed
	}{
		{"93.184.216.34", none, ""},
		{"127.0.0.1", none, "loopback"},
		{"127.0.0.1", private, ""},
		{"::ffff:127.0.0.1", none, "loopback"},
		{"10.0.0.1", none, "private"},
		{"10.0.0.1", private, ""},
		{"100.64.0.1", none, "cgnat"},
		{"100.64.0.1", private, ""},
		{"169.254.1.1", none, "link-local"},
		{"169.254.1.1", private, ""},
		{"169.254.169.254", none, "metadata"},
		{"169.254.169.254", private, "metadata"},
		{"169.254.169.254", metaOnly, "metadata"},
		{"169.254.169.254", metadata, ""},
		{"fd00:ec2::254", private, "metadata"},
		{"fd00:ec2::254", metadata, ""},
		{"0.0.0.0", metadata, "unspecified"},
		{"::", metadata, "unspecified"},
		{"224.0.0.1", metadata, "multicast"},
		{"255.255.255.255", metadata, "broadcast"},
		{"240.0.0.1", none, "reserved"},
		{"198.18.0.1", private, ""},
		{"2002:a9fe:a9fe::1", private, "metadata"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/private=%v,metadata=%v", tc.addr, tc.rules.AllowPrivate, tc.rules.AllowMetadata), func(t *testing.T) {
			err := tc.rules.Check(netip.MustParseAddr(tc.addr))
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("%+v.Check(%s) = %v, want nil", tc.rules, tc.addr, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("%+v.Check(%s) = %v, want ErrRefused", tc.rules, tc.addr, err)
			}
			if want := "egress: address refused: " + tc.refused; err.Error() != want {
				t.Fatalf("%+v.Check(%s) = %q, want %q", tc.rules, tc.addr, err, want)
			}
		})
	}
	if err := (Rules{AllowPrivate: true}).Check(netip.Addr{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("Check(invalid) = %v, want ErrRefused", err)
	}
}

func TestClassString(t *testing.T) {
	for c := Public; c <= Reserved; c++ {
		if s := c.String(); s == "invalid" || strings.ContainsAny(s, " \t") {
			t.Fatalf("Class(%d).String() = %q, want one word", int(c), s)
		}
	}
	if s := Class(0).String(); s != "invalid" {
		t.Fatalf("Class(0).String() = %q, want invalid", s)
	}
}

// FuzzClassify checks on arbitrary IPv6 addresses that unmapping never
// changes the class and that every form carrying an IPv4 address gets that
// address's class.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "::1", "fd00:ec2::254", "::7f00:1"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 16 {
			t.Skip()
		}
		ip := netip.AddrFrom16([16]byte(b[:16]))
		c := Classify(ip)
		if c.String() == "invalid" {
			t.Fatalf("Classify(%s) = %d, not a class", ip, int(c))
		}
		if u := Classify(ip.Unmap()); u != c {
			t.Fatalf("Classify(%s) = %s but Classify(Unmap) = %s", ip, c, u)
		}
		if v4, ok := carriedV4(ip); ok {
			if want := Classify(v4); c != want {
				t.Fatalf("Classify(%s) = %s, want %s, the class of the IPv4 address %s it carries", ip, c, want, v4)
			}
		}
		_ = Rules{AllowPrivate: true}.Check(ip)
	})
}

// carriedV4 is the test's own reading of the IPv6 forms that carry an IPv4
// address.
func carriedV4(ip netip.Addr) (netip.Addr, bool) {
	a := ip.As16()
	var zero [10]byte
	v4 := func(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }
	switch {
	case [10]byte(a[:10]) == zero && a[10] == 0xff && a[11] == 0xff: // mapped
		return v4(a[12:]), true
	case [10]byte(a[:10]) == zero && a[10] == 0 && a[11] == 0 && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback(): // compatible
		return v4(a[12:]), true
	case a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && [8]byte(a[4:12]) == [8]byte{}: // NAT64
		return v4(a[12:]), true
	case a[0] == 0x20 && a[1] == 0x02: // 6to4
		return v4(a[2:6]), true
	case a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0: // Teredo
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], ^binary.BigEndian.Uint32(a[12:]))
		return netip.AddrFrom4(c), true
	}
	return netip.Addr{}, false
}

func BenchmarkClassify(b *testing.B) {
	addrs := []netip.Addr{
		netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("2606:4700:4700::1111"), netip.MustParseAddr("::ffff:169.254.169.254"),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		Classify(addrs[i%len(addrs)])
		i++
	}
}
