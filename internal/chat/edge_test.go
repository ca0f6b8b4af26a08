package chat

import (
	"net/netip"
	"testing"
)

// TestClientNet: the per-IP limits count an IPv4 client by its address
// and an IPv6 client by its /64, and leave loopback alone unless asked.
func TestClientNet(t *testing.T) {
	srv := &Server{cfg: DefaultConfig()}
	limited := &Server{cfg: DefaultConfig()}
	limited.cfg.LimitLoopback = true
	for _, tc := range []struct {
		srv     *Server
		addr    string
		want    string // "" : not counted
		comment string
	}{
		{srv, "192.0.2.7", "192.0.2.7/32", "IPv4: the address"},
		{srv, "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", "IPv6: its /64"},
		{srv, "2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64", "the same /64, another host"},
		{srv, "2001:db8:1:3::1", "2001:db8:1:3::/64", "another /64"},
		{srv, "127.0.0.1", "", "loopback is exempt"},
		{srv, "::1", "", "IPv6 loopback too"},
		{limited, "127.0.0.2", "127.0.0.2/32", "unless LimitLoopback"},
	} {
		got, ok := tc.srv.clientNet(netip.MustParseAddr(tc.addr))
		if tc.want == "" {
			if ok {
				t.Errorf("%s (%s): counted in %v, want not counted", tc.addr, tc.comment, got)
			}
			continue
		}
		if !ok || got.String() != tc.want {
			t.Errorf("%s (%s): %v, %t; want %s", tc.addr, tc.comment, got, ok, tc.want)
		}
	}
}
