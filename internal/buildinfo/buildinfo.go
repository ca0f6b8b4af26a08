// Package buildinfo says which build of a program is running, from what
// the Go toolchain recorded in the binary, for --version.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version returns program's version line: the module version ("(devel)"
// for a build from a checkout), the commit and its time when the build
// recorded them, "modified" for a tree with uncommitted changes, and the
// Go version; for example
//
//	chat-server (devel) commit 0829104c1a2b, 2026-12-01T23:59:00Z, modified; go1.26.8
func Version(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	return program + " " + describe(info)
}

func describe(info *debug.BuildInfo) string {
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var vcs []string
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" && !strings.Contains(version, rev[:min(len(rev), 12)]) {
		vcs = append(vcs, "commit "+rev[:min(len(rev), 12)]) // not in a pseudo-version already
	}
	if t := settings["vcs.time"]; t != "" {
		vcs = append(vcs, t)
	}
	if settings["vcs.modified"] == "true" {
		vcs = append(vcs, "modified")
	}
	if len(vcs) > 0 {
		version += " " + strings.Join(vcs, ", ")
	}
	return version + "; " + info.GoVersion
}
