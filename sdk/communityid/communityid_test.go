package communityid

import (
	"net/netip"
	"testing"
)

// The vectors are the community-id-spec repository's baseline (baseline/README.md tables and
// baseline/baseline_deflt.json, produced by the reference implementation pycommunityid). For ICMP
// and ICMPv6 the "sport" column is the message type and "dport" the code (or, for paired types,
// the counterpart type, which the hash ignores in favour of the mapping).
var vectors = []struct {
	name       string
	seed       uint16
	proto      uint8
	src, dst   string
	sport      int // -1: the protocol has no ports
	dport      int
	want       string
	usesICMPFn bool
}{
	{"tcp out", 0, 6, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:wCb3OG7yAFWelaUydu0D+125CLM=", false},
	{"tcp back", 0, 6, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:wCb3OG7yAFWelaUydu0D+125CLM=", false},
	{"udp out", 0, 17, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", false},
	{"udp back", 0, 17, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", false},
	{"sctp out", 0, 132, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", false},
	{"sctp back", 0, 132, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", false},
	{"sctp equal ports", 0, 132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", false},
	{"icmp echo", 0, 1, "1.2.3.4", "5.6.7.8", 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", true},
	{"icmp echo reply", 0, 1, "5.6.7.8", "1.2.3.4", 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", true},
	{"icmp time exceeded one-way", 0, 1, "1.2.3.4", "5.6.7.8", 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=", true},
	{"icmp time exceeded pcap", 0, 1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM=", true},
	{"icmp echo pcap", 0, 1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", true},
	{"icmp echo reply pcap", 0, 1, "192.168.0.1", "192.168.0.89", 0, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", true},
	{"icmp6 echo", 0, 58, "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", true},
	{"icmp6 echo reply", 0, 58, "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", true},
	{"icmp6 one-way", 0, 58, "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 146, 0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10=", true},
	{"icmp6 neighbour solicitation", 0, 58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", true},
	{"icmp6 neighbour advertisement", 0, 58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", true},
	{"icmp6 neighbour solicitation other way", 0, 58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck=", true},
	{"icmp6 time exceeded", 0, 58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", true},
	{"icmp6 unreachable", 0, 58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", true},
	{"icmp6 router solicitation", 0, 58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 0, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", true},
	{"icmp6 router advertisement", 0, 58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00=", true},
	{"tcp ipv6", 0, 6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", false},
	{"tcp pcap", 0, 6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", false},
	{"udp pcap", 0, 17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", false},
	{"rsvp portless", 0, 46, "1.2.3.4", "5.6.7.8", -1, -1, "1:ikv3kmf89luf73WPz1jOs49S768=", false},
	{"rsvp portless back", 0, 46, "5.6.7.8", "1.2.3.4", -1, -1, "1:ikv3kmf89luf73WPz1jOs49S768=", false},
	{"rsvp ipv6", 0, 46, "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", -1, -1, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", false},
	{"rsvp pcap", 0, 46, "10.1.12.2", "10.1.12.1", -1, -1, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", false},
	{"seed 1 tcp", 1, 6, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=", false},
	{"seed 1 udp", 1, 17, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:OShq+iKDAMVouh/4bMxB9Sz4amw=", false},
	{"seed 1 sctp", 1, 132, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:uitchpn5MMGAQKBJh7bIr/bAr7s=", false},
	{"seed 1 icmp reply", 1, 1, "5.6.7.8", "1.2.3.4", 0, 0, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=", true},
	{"seed 1 icmp one-way", 1, 1, "1.2.3.4", "5.6.7.8", 11, 0, "1:1DD7cWGC/Yg91YGsQeni8du3pIA=", true},
	{"seed 1 icmp6 echo", 1, 58, "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 128, 0, "1:IO27GQzPuCtNnwFvjWALMHu5tJE=", true},
	{"seed 1 icmp6 one-way", 1, 58, "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 146, 0, "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s=", true},
	{"seed 1 rsvp ipv6", 1, 46, "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", -1, -1, "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=", false},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(v.src), netip.MustParseAddr(v.dst)
			var h [20]byte
			switch {
			case v.usesICMPFn:
				h = ICMPHash(v.seed, src, dst, v.proto, uint8(v.sport), uint8(v.dport))
			case v.sport < 0:
				// Port-less protocols must ignore whatever ports a caller passes.
				h = Hash(v.seed, src, dst, v.proto, 4711, 1)
			default:
				h = Hash(v.seed, src, dst, v.proto, uint16(v.sport), uint16(v.dport))
			}
			if got := String(h); got != v.want {
				t.Errorf("got %s, want %s", got, v.want)
			}
		})
	}
}

func TestMappedIPv4HashesAsIPv4(t *testing.T) {
	a := Hash(0, netip.MustParseAddr("::ffff:1.2.3.4"), netip.MustParseAddr("::ffff:5.6.7.8"), 6, 1122, 3344)
	if got := String(a); got != "1:wCb3OG7yAFWelaUydu0D+125CLM=" {
		t.Errorf("4-in-6 mapped addresses: got %s, want the IPv4 hash", got)
	}
}

func TestICMPPorts(t *testing.T) {
	tests := []struct {
		name       string
		proto, typ uint8
		code       uint8
		sp, dp     uint16
		wantOneWay bool
	}{
		{"echo request", 1, 8, 0, 8, 0, false},
		{"echo reply", 1, 0, 0, 0, 8, false},
		{"timestamp", 1, 13, 0, 13, 14, false},
		{"unreachable keeps code", 1, 3, 3, 3, 3, true},
		{"icmp6 echo request", 58, 128, 0, 128, 129, false},
		{"icmp6 neighbour advert", 58, 136, 0, 136, 135, false},
		{"icmp6 packet too big", 58, 2, 0, 2, 0, true},
		{"icmp type on icmp6 is one-way", 58, 8, 0, 8, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, dp, ow := ICMPPorts(tt.proto, tt.typ, tt.code)
			if sp != tt.sp || dp != tt.dp || ow != tt.wantOneWay {
				t.Errorf("got (%d, %d, %v), want (%d, %d, %v)", sp, dp, ow, tt.sp, tt.dp, tt.wantOneWay)
			}
		})
	}
}

func TestHashAllocatesNothing(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	var sink [20]byte
	n := testing.AllocsPerRun(100, func() {
		sink = Hash(0, src, dst, 6, 1234, 80)
		sink = ICMPHash(0, dst, src, 58, 128, 0)
	})
	if n != 0 {
		t.Errorf("Hash allocates %v times per call, want 0", n)
	}
	_ = sink
}

func BenchmarkHash(b *testing.B) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	b.ReportAllocs()
	for b.Loop() {
		Hash(0, src, dst, 6, 40000, 443)
	}
}
