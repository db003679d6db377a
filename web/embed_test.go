package web_test

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/web"
)

// TestPages checks that every page defines its title and content, and that
// every static file a template names is embedded.
func TestPages(t *testing.T) {
	pages, err := fs.Glob(web.Templates, "pages/*.html")
	if err != nil || len(pages) < 10 {
		t.Fatalf("pages %v, err %v", pages, err)
	}
	assetRef := regexp.MustCompile(`asset "([^"]+)"`)
	for _, name := range append(pages, web.Layouts...) {
		b, err := fs.ReadFile(web.Templates, name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.HasPrefix(name, "pages/") && (!strings.Contains(s, `{{define "title"}}`) || !strings.Contains(s, `{{define "content"}}`)) {
			t.Errorf("%s lacks a title or content template", name)
		}
		if strings.Contains(s, "<script>") || strings.Contains(s, " style=") || strings.Contains(s, " onclick=") {
			t.Errorf("%s has inline script or style, which the console's CSP refuses", name)
		}
		for _, m := range assetRef.FindAllStringSubmatch(s, -1) {
			if _, err := fs.Stat(web.Static, m[1]); err != nil {
				t.Errorf("%s names %s, which is not embedded", name, m[1])
			}
		}
	}
}

// TestVendoredChartLibrary checks the committed copy of uPlot.
func TestVendoredChartLibrary(t *testing.T) {
	js, err := fs.ReadFile(web.Static, "vendor/uplot.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js[:200]), "uPlot (v1.6.32)") {
		t.Errorf("unexpected uPlot build: %q", js[:80])
	}
	if len(js) > 80<<10 {
		t.Errorf("uPlot is %d bytes", len(js))
	}
	if _, err := fs.Stat(web.Static, "vendor/uplot.LICENSE"); err != nil {
		t.Error("the licence of the vendored library is missing")
	}
}
