package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		info debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}}, "v1.2.0; go1.26.8"},
		{debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0829104c1a2b3c4d5e6f"}, {Key: "vcs.time", Value: "2026-12-01T23:59:00Z"}, {Key: "vcs.modified", Value: "true"},
		}}, "(devel) commit 0829104c1a2b, 2026-12-01T23:59:00Z, modified; go1.26.8"},
		{debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"(devel) commit abc; go1.26.8"},
		{debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202003551-7ecda3a5265a+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "7ecda3a5265a0000"}, {Key: "vcs.time", Value: "2026-12-02T00:35:51Z"}, {Key: "vcs.modified", Value: "true"},
		}}, "v0.0.0-20261202003551-7ecda3a5265a+dirty 2026-12-02T00:35:51Z, modified; go1.26.8"},
	} {
		if got := describe(&tc.info); got != tc.want {
			t.Errorf("describe(%+v) = %q, want %q", tc.info, got, tc.want)
		}
	}
}
