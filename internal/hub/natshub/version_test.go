package natshub

import "testing"

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"2.15.2", true},
		{"2.10.0", true},
		{"2.10.0-beta.1", true},
		{"2.9.25", false},
		{"2.2.0", false},
		{"3.0.0", true},
		{"", false},
	} {
		if got := versionAtLeast(tc.v, minServerVersion); got != tc.want {
			t.Errorf("versionAtLeast(%q, %s) = %v, want %v", tc.v, minServerVersion, got, tc.want)
		}
	}
}
