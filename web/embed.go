// Package web holds Nozzle's web console: server-rendered html/template
// pages and the static files they use (CSS, a little JavaScript, and the
// vendored uPlot chart library), embedded in the binary so that the console
// works offline. The gateway serves them; this package knows nothing of
// HTTP.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static templates
var files embed.FS

// Static holds the console's static files, rooted at static/: console.css,
// console.js and vendor/ (uPlot, copied from npm by web/tests' "npm run
// vendor").
var Static fs.FS = sub("static")

// Templates holds the console's html/template files, rooted at templates/:
// layout.html (the frame every page shares) and one file per page under
// pages/, each defining the "title" and "content" templates.
var Templates fs.FS = sub("templates")

// Layouts lists the templates every page is parsed with, in order.
var Layouts = []string{"layout.html", "partials.html"}

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a constant of this package
	}
	return f
}
