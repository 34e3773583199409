// Package ui is the web UI of quanyu analysis: a single-page app (service map, flows, traces,
// alerts, agents, subscriptions) built from src/ with esbuild into dist/, which is committed and embedded
// so that `go build` needs no Node. Rebuild it with `make ui` after changing src/.
//
// The app routes on the URL fragment (#/map, #/flows, #/trace/<community id>, #/alerts,
// #/alerts/<id>, #/agents, #/subscriptions), so the server only serves files; any other path that names no file gets
// index.html, in case a link is written without the '#'.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed dist
var dist embed.FS

// Handler serves the app. Mount it at "/"; the JSON API is served by other handlers.
func Handler() http.Handler {
	root, err := fs.Sub(dist, "dist")
	if err != nil {
		panic("ui: embedded dist is missing: " + err.Error()) // cannot happen with the embed above
	}
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		if _, err := fs.Stat(root, name); err != nil {
			if strings.HasPrefix(name, "api/") || path.Ext(name) != "" {
				http.NotFound(w, r) // a missing asset or API is an error, not the app
				return
			}
			name = "index.html"
		}
		// index.html must be revalidated so a new build is picked up; the rest is small.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if name == "index.html" {
			http.ServeFileFS(w, r, root, "index.html")
			return
		}
		files.ServeHTTP(w, r)
	})
}
