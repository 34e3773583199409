// Package version is the build's version, set by the Makefile through -ldflags.
package version

// Version is "dev" unless the build sets it.
var Version = "dev"
