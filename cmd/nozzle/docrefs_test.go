package main

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The documents whose code references TestDocs_References keeps true to
// the tree, relative to the repository root.
var refDocs = []string{"README.md", "DEVELOPERS.md", "docs/ARCHITECTURE.md", "docs/API.md", "docs/LEDGER.md", "docs/ECONOMICS.md"}

// refAllow holds code spans that read like references to this module but
// deliberately name something outside it; each with the reason.
var refAllow = map[string]string{
	"--flag": "README's configuration table's heading: the placeholder for each key's flag",
	// DEVELOPERS.md's record of variants measured, then reverted with
	// their switches
	"NOZZLE_CUDA_LORA_NORM_SHRINK=0": "a reverted CUDA variant's switch",
	"NOZZLE_CUDA_LORA_FOLD_SMALL":    "a reverted CUDA variant's switch",
}

// TestDocs_References checks the code spans (`…`, outside fenced blocks)
// of the documents above that name this repository's files or code, so
// that a rename or a removal fails here with the document's line
// (go test ./cmd/nozzle -run Docs):
//
//   - a path whose first element is one of the repository's top-level
//     folders (`gateway/batchrun.go`, `web/static/vendor/`,
//     `csrc/src/cpu_*.c`, `.ci/run`) must exist, or for a pattern match a
//     file; a bare source file name (`reasoning.go`, `cpu_kernels_drivers.h`)
//     must be some file's name in the tree. Routes, other modules' paths
//     (`gofiber/fiber/v2`) and build outputs and local data (`build/`,
//     `bin/`, `data/`: top-level folders .gitignore names) are not paths
//     here;
//   - a qualified Go name, pkg.Name[.Member] where pkg is the name of one
//     of the module's packages (`nozzle.FirstCall`, `grammar.Framed`,
//     `model.Config.ContextLength`), must be declared in that package (a
//     method of one of its types counts: `tokenizer.ThinkTags`), with the
//     member a field or method, promoted ones included, of the type;
//     Type.Member (`Server.complete`, `UsageEvent.Batch`) must name a field
//     or method of a type of that name declared in the module — in a
//     package the same table row names, where one declares it. A lowercase
//     first part that is neither (`fs.FS`, `strings.TrimSpace`, a
//     variable) is not checked, nor is a dotted name with an underscore (a
//     JSON member's path: `usage.prompt_tokens_details.cached_tokens`) or a
//     file name (`config.json`); a capitalised first part that the module
//     does not declare is reported;
//   - a test, benchmark or fuzz target's name (`TestREADME_Examples`,
//     `TestCUDA_Parity/LongropePhi4Partial`: its subtest left out) must be
//     a function of a _test.go file;
//   - `make target…` (in a span, or a line of a fenced block) must name
//     the Makefile's targets; `--flag` (a span, its value after a space)
//     must be a Config key's flag or one a command of cmd/nozzle defines;
//     an environment variable `NOZZLE_…` must be a Config key's or be
//     named in the code (Go, C, CUDA, scripts, the Makefile); a metric or
//     Stripe meter event name `nozzle_…` (`nozzle_runtime_adapter_drops_total{tier}`)
//     must be a string in the Go code;
//   - an HTTP route, `METHOD /path` (`POST/GET /v1/keys`) or a bare
//     `/v1/…`, `/admin/…`, `/internal/…`, `/console/…` path, must be one
//     the gateway or the runtime's server registers (a {param}, <param>
//     or … segment stands for any; a bare path may be a routes' prefix);
//   - in a table row that names Go files or packages (ARCHITECTURE.md's
//     "where each concern lives"), a bare mixed-case name (`batchRunner`,
//     `sessionKey`, `ToolFormat`) must be declared in one of the packages
//     the row names: at the top level, or as a field or method of one of
//     their types (`removeAdapter`). All-lowercase words (request members,
//     scopes) and ALL_CAPS ones (C macros) are not taken for Go names.
//
// The Go code is read with go/parser and regular expressions (no build,
// no engine); only test functions' names are taken from test files.
func TestDocs_References(t *testing.T) {
	root := filepath.Join("..", "..")
	mod, err := loadModule(root)
	if err != nil {
		t.Fatal(err)
	}
	var stale []string
	for _, doc := range refDocs {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range mod.check(string(b)) {
			stale = append(stale, fmt.Sprintf("%s:%d: `%s`: %s", doc, p.line, p.span, p.why))
		}
	}
	if len(stale) > 0 {
		t.Errorf("%d stale references (fix the document to what the code is now; see refAllow for deliberate mentions of outside things):\n%s", len(stale), strings.Join(stale, "\n"))
	}
}

// codeSpan is one inline code span of a Markdown text.
type codeSpan struct {
	line int    // the line it starts on
	text string // its content, line breaks read as spaces, trimmed
	row  int    // the table row it stands in (its line), or 0
}

// codeSpans returns the text's inline code spans in order. Fenced code
// blocks are skipped; a span is closed by a backtick run as long as the one
// that opened it, in the same paragraph (CommonMark), else its backticks
// are literal.
func codeSpans(text string) []codeSpan {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, l := range lines {
		s := strings.TrimLeft(l, " ")
		switch {
		case fence == "" && (strings.HasPrefix(s, "```") || strings.HasPrefix(s, "~~~")):
			fence = s[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(s, fence) {
				fence = ""
			}
			lines[i] = ""
		}
	}
	var spans []codeSpan
	for start := 0; start < len(lines); {
		// one paragraph (or table row run) at a time
		end := start
		for end < len(lines) && strings.TrimSpace(lines[end]) != "" {
			end++
		}
		para := strings.Join(lines[start:end], "\n")
		for i := 0; i < len(para); {
			if para[i] != '`' {
				i++
				continue
			}
			n := runLen(para, i)
			j := i + n
			closed := -1
			for j < len(para) {
				if para[j] != '`' {
					j++
					continue
				}
				if m := runLen(para, j); m != n {
					j += m
					continue
				}
				closed = j
				break
			}
			if closed < 0 {
				i += n
				continue
			}
			line := start + strings.Count(para[:i], "\n")
			row := 0
			if strings.HasPrefix(lines[line], "|") && !strings.Contains(para[i:closed], "\n") {
				row = line + 1
			}
			spans = append(spans, codeSpan{
				line: line + 1,
				text: strings.TrimSpace(strings.ReplaceAll(para[i+n:closed], "\n", " ")),
				row:  row,
			})
			i = closed + n
		}
		start = end + 1
	}
	return spans
}

func runLen(s string, i int) int {
	n := 0
	for i+n < len(s) && s[i+n] == '`' {
		n++
	}
	return n
}

// goPackage is what the documents may name of one of the module's
// packages: its top-level declarations and its types' members.
type goPackage struct {
	dir     string // slash-separated, relative to the root ("." for the root)
	name    string
	decls   map[string]bool
	types   map[string]*goType
	members map[string]bool // every field and method of its types
}

type goType struct {
	members  map[string]bool // fields and methods
	embedded []string        // embedded types: "T" or "pkg.T"
}

// module is the repository as the documents see it.
type module struct {
	root      string
	top       map[string]bool         // top-level folders that hold tracked files
	basenames map[string][]string     // file name → the folders holding one
	pkgs      map[string]*goPackage   // by folder
	byName    map[string][]*goPackage // by package name (main left out)
	typeIn    map[string][]*goPackage // type name → the packages declaring it
	tests     map[string]bool         // Test…, Benchmark… and Fuzz… functions
	targets   map[string]bool         // the Makefile's targets
	flags     map[string]bool         // the binary's flags
	env       map[string]bool         // NOZZLE_… variables
	names     map[string]bool         // "nozzle_…" strings of the Go code
	routes    []route                 // the HTTP routes the code registers
}

func loadModule(root string) (*module, error) {
	m := &module{
		root:      root,
		top:       map[string]bool{},
		basenames: map[string][]string{},
		pkgs:      map[string]*goPackage{},
		byName:    map[string][]*goPackage{},
		typeIn:    map[string][]*goPackage{},
		tests:     map[string]bool{},
		targets:   map[string]bool{},
		flags:     map[string]bool{},
		env:       map[string]bool{},
		names:     map[string]bool{},
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		return nil, err
	}
	for _, t := range makeTargetRE.FindAllStringSubmatch(string(mk), -1) {
		for _, name := range strings.Fields(t[1]) {
			m.targets[name] = true
		}
	}
	def := DefaultConfig()
	for _, f := range def.fields() {
		m.flags[FlagName(f.key)] = true
		m.env[EnvName(f.key)] = true
	}
	// Top-level folders git ignores ("/build/" in .gitignore) hold build
	// outputs and local data, never a document's reference to the tree.
	ignored := map[string]bool{}
	if f, err := os.Open(filepath.Join(root, ".gitignore")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "/") {
				ignored[strings.Trim(l, "/")] = true
			}
		}
		f.Close()
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && e.Name() != ".git" && !ignored[e.Name()] {
			m.top[e.Name()] = true
		}
	}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || ignored[rel]) {
				return filepath.SkipDir
			}
			return nil
		}
		dir := path.Dir(rel)
		m.basenames[d.Name()] = append(m.basenames[d.Name()], dir)
		if envFiles[path.Ext(rel)] || d.Name() == "Makefile" || d.Name() == "Dockerfile" {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, v := range envRE.FindAllString(string(b), -1) {
				m.env[v] = true
			}
		}
		if strings.HasSuffix(rel, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, f := range testFuncRE.FindAllStringSubmatch(string(b), -1) {
				m.tests[f[1]] = true
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.Contains("/"+rel, "/testdata/") {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil {
			for _, n := range nameLitRE.FindAllStringSubmatch(string(b), -1) {
				m.names[n[1]] = true
			}
		}
		if dir == "gateway" || dir == "runtime" {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m.routes = append(m.routes, routesIn(string(b))...)
		}
		if dir == "cmd/nozzle" {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, f := range flagDefRE.FindAllStringSubmatch(string(b), -1) {
				m.flags[f[1]] = true
			}
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkg := m.pkgs[dir]
		if pkg == nil {
			pkg = &goPackage{dir: dir, name: f.Name.Name, decls: map[string]bool{}, types: map[string]*goType{}, members: map[string]bool{}}
			m.pkgs[dir] = pkg
		}
		pkg.add(f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, pkg := range m.pkgs {
		if pkg.name != "main" {
			m.byName[pkg.name] = append(m.byName[pkg.name], pkg)
		}
		for name, t := range pkg.types {
			m.typeIn[name] = append(m.typeIn[name], pkg)
			for member := range t.members {
				pkg.members[member] = true
			}
		}
	}
	return m, nil
}

func (p *goPackage) typ(name string) *goType {
	t := p.types[name]
	if t == nil {
		t = &goType{members: map[string]bool{}}
		p.types[name] = t
	}
	return t
}

// add records a file's top-level names and its types' members.
func (p *goPackage) add(f *ast.File) {
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil || len(d.Recv.List) == 0 {
				p.decls[d.Name.Name] = true
				continue
			}
			if recv := typeName(d.Recv.List[0].Type); recv != "" {
				p.typ(recv).members[d.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.ValueSpec:
					for _, n := range s.Names {
						p.decls[n.Name] = true
					}
				case *ast.TypeSpec:
					p.decls[s.Name.Name] = true
					t := p.typ(s.Name.Name)
					switch u := s.Type.(type) {
					case *ast.StructType:
						for _, fl := range u.Fields.List {
							if len(fl.Names) == 0 {
								if e := typeName(fl.Type); e != "" {
									t.embedded = append(t.embedded, e)
									t.members[e[strings.LastIndex(e, ".")+1:]] = true
								}
							}
							for _, n := range fl.Names {
								t.members[n.Name] = true
							}
						}
					case *ast.InterfaceType:
						for _, fl := range u.Methods.List {
							if len(fl.Names) == 0 {
								if e := typeName(fl.Type); e != "" {
									t.embedded = append(t.embedded, e)
								}
							}
							for _, n := range fl.Names {
								t.members[n.Name] = true
							}
						}
					default:
						// type T U: U's fields are T's
						if e := typeName(u); e != "" {
							t.embedded = append(t.embedded, e)
						}
					}
				}
			}
		}
	}
}

// typeName is the name of the type an expression names ("T", "pkg.T"),
// pointers and type arguments left out, or "".
func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return typeName(e.X)
	case *ast.IndexExpr:
		return typeName(e.X)
	case *ast.IndexListExpr:
		return typeName(e.X)
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			return x.Name + "." + e.Sel.Name
		}
	}
	return ""
}

// hasMember tells whether type name of pkg has a field or method member,
// its own or promoted from an embedded type.
func (m *module) hasMember(pkg *goPackage, name, member string, seen map[string]bool) bool {
	key := pkg.dir + "." + name
	if seen[key] {
		return false
	}
	seen[key] = true
	t := pkg.types[name]
	if t == nil {
		return false
	}
	if t.members[member] {
		return true
	}
	for _, e := range t.embedded {
		if q, n, ok := strings.Cut(e, "."); ok {
			for _, other := range m.byName[q] {
				if m.hasMember(other, n, member, seen) {
					return true
				}
			}
			continue
		}
		if m.hasMember(pkg, e, member, seen) {
			return true
		}
	}
	return false
}

// problem is one stale reference.
type problem struct {
	line      int
	span, why string
}

var (
	identRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	qualifiedRE  = regexp.MustCompile(`^\*?([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?(?:\(\))?$`)
	testFuncRE   = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)\w*)\(`)
	testNameRE   = regexp.MustCompile(`^((?:Test|Benchmark|Fuzz)[A-Z_][A-Za-z0-9_]*)(?:/\S*)?$`)
	makeTargetRE = regexp.MustCompile(`(?m)^([A-Za-z0-9_./%-]+(?: [A-Za-z0-9_./%-]+)*):(?:[^=]|$)`)
	makeCmdRE    = regexp.MustCompile(`^make((?: [^ ]+)*)$`)
	flagDefRE    = regexp.MustCompile(`\.(?:String|Bool|Int|Int64|Uint|Float64|Duration|Var|StringVar|BoolVar|IntVar|Int64Var|UintVar|Float64Var|DurationVar|TextVar|Func)\((?:&?[A-Za-z0-9_.]+, )?"([a-z0-9-]+)"`)
	envFiles     = map[string]bool{".go": true, ".c": true, ".h": true, ".cu": true, ".cuh": true, ".sh": true, ".toml": true, ".js": true}
	nameLitRE    = regexp.MustCompile(`"(nozzle_[a-z0-9_]+)"`)
	nameUseRE    = regexp.MustCompile(`^(nozzle_[a-z0-9_]+)(?:\{[^}]*\})?$`)
	routeUseRE   = regexp.MustCompile(`^((?:GET|POST|PUT|PATCH|DELETE)(?:/(?:GET|POST|PUT|PATCH|DELETE))*) (/.*)$`)
	pathUseRE    = regexp.MustCompile(`^(/(?:v1|admin|internal|console)(?:/\S*)?)$`)
	envRE        = regexp.MustCompile(`NOZZLE_[A-Z0-9_]+`)
	envUseRE     = regexp.MustCompile(`^(NOZZLE_[A-Z0-9_]+)(?:=\S*)?$`)
	flagUseRE    = regexp.MustCompile(`^--([a-z0-9][a-z0-9-]*)(?:[ =][^ ]+)?$`)
	sourceRE     = regexp.MustCompile(`^[A-Za-z0-9_.*-]+\.(go|c|h|cu|cuh|py|sh|js|mjs|html|css|md)$`)
	// extensions that make a dotted span a file name, not a Go name
	fileExts = map[string]bool{"go": true, "c": true, "h": true, "cu": true, "cuh": true, "py": true, "sh": true, "js": true, "mjs": true,
		"html": true, "css": true, "md": true, "json": true, "jsonl": true, "toml": true, "so": true, "mod": true, "sum": true, "txt": true,
		"yaml": true, "yml": true, "csv": true, "safetensors": true, "db": true, "log": true, "bin": true, "model": true, "jinja": true, "gguf": true, "pt": true}
)

// check returns the stale references among a document's code spans.
func (m *module) check(text string) []problem {
	spans := codeSpans(text)
	// the packages each table row names
	rowPkgs := map[int][]*goPackage{}
	for _, s := range spans {
		if s.row != 0 {
			rowPkgs[s.row] = append(rowPkgs[s.row], m.packagesOf(s.text)...)
		}
	}
	var out []problem
	// make commands in fenced blocks
	fenced := false
	for i, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			if why := m.checkMake(strings.TrimPrefix(t, "$ ")); why != "" {
				out = append(out, problem{i + 1, t, why})
			}
		}
	}
	for _, s := range spans {
		if _, ok := refAllow[s.text]; ok {
			continue
		}
		if why := m.checkSpan(s, rowPkgs[s.row]); why != "" {
			out = append(out, problem{s.line, s.text, why})
		}
	}
	return out
}

// repoPath returns the span as a path into the repository ("" if it is
// none) and whether it is a bare file name.
func (m *module) repoPath(s string) (p string, bare bool) {
	if strings.ContainsAny(s, " \t\"'`<>{}$=,") {
		return "", false
	}
	s = strings.TrimPrefix(s, "./")
	if first, _, ok := strings.Cut(s, "/"); ok {
		if m.top[first] {
			return s, false
		}
		return "", false
	}
	if sourceRE.MatchString(s) {
		return s, true
	}
	return "", false
}

// packagesOf returns the module's packages a span names as a path.
func (m *module) packagesOf(s string) []*goPackage {
	p, bare := m.repoPath(s)
	if p == "" {
		return nil
	}
	var dirs []string
	switch {
	case bare:
		if strings.HasSuffix(p, ".go") {
			dirs = m.basenames[p]
		}
	case strings.HasSuffix(p, ".go"):
		dirs = []string{path.Dir(p)}
	default:
		dirs = []string{strings.TrimSuffix(p, "/")}
	}
	var pkgs []*goPackage
	for _, d := range dirs {
		if strings.Contains(d, "*") {
			continue
		}
		if pkg := m.pkgs[d]; pkg != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs
}

// checkMake checks a make command line: its targets must be the
// Makefile's (variables set on the line and options aside).
func (m *module) checkMake(l string) string {
	c := makeCmdRE.FindStringSubmatch(strings.TrimSpace(strings.SplitN(l, "#", 2)[0]))
	if c == nil {
		return ""
	}
	var missing []string
	for _, w := range strings.Fields(c[1]) {
		if strings.HasPrefix(w, "-") || strings.Contains(w, "=") {
			continue
		}
		if !m.targets[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return "no Makefile target " + strings.Join(missing, ", ")
	}
	return ""
}

// checkSpan returns what is stale in one span, or "".
func (m *module) checkSpan(s codeSpan, row []*goPackage) string {
	if why := m.checkMake(s.text); why != "" {
		return why
	}
	if f := flagUseRE.FindStringSubmatch(s.text); f != nil {
		if !m.flags[f[1]] {
			return "no flag --" + f[1] + " in Config or cmd/nozzle's commands"
		}
		return ""
	}
	if v := envUseRE.FindStringSubmatch(s.text); v != nil {
		if !m.env[v[1]] {
			return "no environment variable " + v[1] + " in Config or the code"
		}
		return ""
	}
	if n := nameUseRE.FindStringSubmatch(s.text); n != nil {
		if !m.names[n[1]] {
			return "no metric or meter event " + n[1] + " in the Go code"
		}
		return ""
	}
	if r := routeUseRE.FindStringSubmatch(s.text); r != nil {
		return m.checkRoute(r[1], r[2])
	}
	if r := pathUseRE.FindStringSubmatch(s.text); r != nil {
		return m.checkRoute("", r[1])
	}
	if t := testNameRE.FindStringSubmatch(s.text); t != nil {
		if !m.tests[t[1]] {
			return "no test function " + t[1]
		}
		return ""
	}
	if p, bare := m.repoPath(s.text); p != "" {
		if bare {
			for name := range m.basenames {
				if ok, _ := path.Match(p, name); ok {
					return ""
				}
			}
			return "no file of that name in the repository"
		}
		if strings.ContainsAny(p, "*?[") {
			if matches, _ := filepath.Glob(filepath.Join(m.root, filepath.FromSlash(p))); len(matches) > 0 {
				return ""
			}
			return "no file matches"
		}
		fi, err := os.Stat(filepath.Join(m.root, filepath.FromSlash(p)))
		if err != nil {
			return "no such file or folder"
		}
		if strings.HasSuffix(p, "/") && !fi.IsDir() {
			return "not a folder"
		}
		return ""
	}
	if q := qualifiedRE.FindStringSubmatch(s.text); q != nil {
		last := q[2]
		if q[3] != "" {
			last = q[3]
		}
		if fileExts[last] || strings.Contains(q[2]+q[3], "_") {
			return "" // a file name, or a JSON member's path
		}
		return m.checkQualified(q[1], q[2], q[3], row)
	}
	if len(row) > 0 && identRE.MatchString(s.text) && strings.ToLower(s.text) != s.text && strings.ToUpper(s.text) != s.text {
		for _, pkg := range row {
			if pkg.decls[s.text] || pkg.members[s.text] {
				return ""
			}
		}
		return "not declared in " + dirList(row)
	}
	return ""
}

// checkQualified checks a.b or a.b.c.
func (m *module) checkQualified(a, b, c string, row []*goPackage) string {
	if pkgs := m.byName[a]; len(pkgs) > 0 {
		for _, pkg := range pkgs {
			if c == "" && (pkg.decls[b] || pkg.members[b]) {
				return ""
			}
			if pkg.decls[b] && c != "" && m.hasMember(pkg, b, c, map[string]bool{}) {
				return ""
			}
		}
		if c != "" {
			return fmt.Sprintf("no %s.%s with a field or method %s in %s", a, b, c, dirList(pkgs))
		}
		return fmt.Sprintf("%s is not declared in %s", b, dirList(pkgs))
	}
	decl := m.typeIn[a]
	if len(decl) == 0 {
		if strings.ToLower(a[:1]) == a[:1] {
			return "" // a variable, or another module's package
		}
		return fmt.Sprintf("no type %s in the module", a)
	}
	var inRow []*goPackage
	for _, pkg := range decl {
		for _, r := range row {
			if r == pkg {
				inRow = append(inRow, pkg)
				break
			}
		}
	}
	if len(inRow) > 0 {
		decl = inRow
	}
	for _, pkg := range decl {
		if m.hasMember(pkg, a, b, map[string]bool{}) {
			return ""
		}
	}
	return fmt.Sprintf("%s has no field or method %s (%s)", a, b, dirList(decl))
}

func dirList(pkgs []*goPackage) string {
	var ds []string
	seen := map[string]bool{}
	for _, p := range pkgs {
		if !seen[p.dir] {
			seen[p.dir] = true
			ds = append(ds, p.dir)
		}
	}
	sort.Strings(ds)
	return strings.Join(ds, ", ")
}

func TestDocs_CodeSpans(t *testing.T) {
	text := "a `x` and ``y ` z`` and `multi\nline`\n\n```sh\n`not`\n```\n| `gateway/a.go` | `b` |\nlone ` tick\n\n`c`"
	got := fmt.Sprint(codeSpans(text))
	want := fmt.Sprint([]codeSpan{{1, "x", 0}, {1, "y ` z", 0}, {1, "multi line", 0}, {7, "gateway/a.go", 7}, {7, "b", 7}, {10, "c", 0}})
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestDocs_LedgerSchema keeps docs/LEDGER.md's schema version and bucket
// table true to billing/schema.go, and the engine ABI version DEVELOPERS.md
// names true to csrc/include/nozzle_engine.h.
func TestDocs_LedgerSchema(t *testing.T) {
	root := filepath.Join("..", "..")
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, "billing", "schema.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	version := ""
	buckets := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if i >= len(vs.Values) {
				break
			}
			switch v := vs.Values[i].(type) {
			case *ast.BasicLit:
				if name.Name == "SchemaVersion" {
					version = v.Value
				}
			case *ast.CallExpr: // []byte("name"): bucket names start with b
				if lit, ok := v.Args[0].(*ast.BasicLit); ok && len(v.Args) == 1 && strings.HasPrefix(name.Name, "b") {
					buckets[strings.Trim(lit.Value, `"`)] = true
				}
			}
		}
		return true
	})
	if version == "" || len(buckets) == 0 {
		t.Fatalf("billing/schema.go: no SchemaVersion or bucket names found (%q, %d)", version, len(buckets))
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "LEDGER.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if want := "`SchemaVersion` (now **" + version + "**)"; !strings.Contains(doc, want) {
		t.Errorf("docs/LEDGER.md does not say %s", want)
	}
	rows := map[string]int{}
	table := false // in the table under "| bucket | key | value |"
	for i, l := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(l, "| bucket | key | value |"):
			table = true
		case !strings.HasPrefix(l, "|"):
			table = false
		case table:
			if m := bucketRowRE.FindStringSubmatch(l); m != nil {
				rows[m[1]] = i + 1
			}
		}
	}
	if len(rows) == 0 {
		t.Fatal("docs/LEDGER.md: no bucket table (| bucket | key | value |)")
	}
	for name := range buckets {
		if rows[name] == 0 {
			t.Errorf("docs/LEDGER.md: no row for bucket %s in the schema table", name)
		}
	}
	for name, line := range rows {
		if !buckets[name] {
			t.Errorf("docs/LEDGER.md:%d: bucket %s is not in billing/schema.go", line, name)
		}
	}

	h, err := os.ReadFile(filepath.Join(root, "csrc", "include", "nozzle_engine.h"))
	if err != nil {
		t.Fatal(err)
	}
	abi := regexp.MustCompile(`(?m)^#define NZ_ABI_VERSION (\d+)`).FindSubmatch(h)
	if abi == nil {
		t.Fatal("csrc/include/nozzle_engine.h: no NZ_ABI_VERSION")
	}
	for _, doc := range refDocs {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range strings.Split(string(b), "\n") {
			if m := abiDocRE.FindStringSubmatch(l); m != nil && m[1] != string(abi[1]) {
				t.Errorf("%s:%d: NZ_ABI_VERSION is %s, not %s", doc, i+1, abi[1], m[1])
			}
		}
	}
}

var (
	// a row of LEDGER.md's schema table: | `bucket` | key | value |
	bucketRowRE = regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| .* \\| .* \\|$")
	// the current ABI version where a document names it: `NZ_ABI_VERSION`, 8
	abiDocRE = regexp.MustCompile("`NZ_ABI_VERSION`,? (\\d+)")
)

// route is one HTTP route of the code: a method and its path's segments
// (":x", "{x}" and "*" as registered).
type route struct {
	method string
	path   []string
}

var (
	// fiber: x := y.Group("/p", …) and x.Get("/p", …); the runtime's
	// server: mux.HandleFunc("GET /p", …)
	groupRE     = regexp.MustCompile(`(\w+) := ([\w.]+)\.Group\("([^"]*)"`)
	fiberRE     = regexp.MustCompile(`([\w.]+)\.(Get|Post|Put|Patch|Delete)\("(/[^"]*)"`)
	handleFunRE = regexp.MustCompile(`\.HandleFunc\("(?:(GET|POST|PUT|PATCH|DELETE) )?(/[^"]*)"`)
)

// routesIn returns the routes a Go file registers.
func routesIn(src string) []route {
	prefix := map[string]string{"app": "", "s.app": ""}
	for _, g := range groupRE.FindAllStringSubmatch(src, -1) {
		if p, ok := prefix[g[2]]; ok {
			prefix[g[1]] = p + g[3]
		}
	}
	var out []route
	for _, r := range fiberRE.FindAllStringSubmatch(src, -1) {
		p, ok := prefix[r[1]]
		if !ok {
			continue // a header's Get, or some other receiver
		}
		out = append(out, route{strings.ToUpper(r[2]), splitPath(p + r[3])})
	}
	for _, r := range handleFunRE.FindAllStringSubmatch(src, -1) {
		out = append(out, route{r[1], splitPath(r[2])})
	}
	return out
}

func splitPath(p string) []string {
	p, _, _ = strings.Cut(p, "?")
	return strings.Split(strings.Trim(p, "/"), "/")
}

// checkRoute checks a route a document names: methods ("GET", "POST/GET",
// or "" for any) and path.
func (m *module) checkRoute(methods, p string) string {
	doc := splitPath(p)
	var missing []string
	for _, method := range strings.Split(methods, "/") {
		found := false
		for _, r := range m.routes {
			if (method == "" || r.method == "" || r.method == method) && routeMatch(r.path, doc, method == "") {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, strings.TrimSpace(method+" "+p))
		}
	}
	if len(missing) > 0 {
		return "no route " + strings.Join(missing, ", ") + " in gateway/ or runtime/"
	}
	return ""
}

// routeMatch tells whether a document's path segments name a route (or,
// with prefix, the beginning of one).
func routeMatch(route, doc []string, prefix bool) bool {
	for i, d := range doc {
		if i >= len(route) {
			return false
		}
		r := route[i]
		if r == "*" {
			return true
		}
		any := strings.HasPrefix(d, "{") || strings.HasPrefix(d, "<") || strings.Contains(d, "…")
		if !any && !strings.HasPrefix(r, ":") && !strings.HasPrefix(r, "{") && r != d {
			return false
		}
	}
	return len(doc) == len(route) || prefix
}
