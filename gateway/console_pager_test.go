package gateway_test

import (
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// pagerLink is the address of a page's Previous or Next link in the pager
// labelled label ("" when there is none).
func pagerLink(t *testing.T, body, label, rel string) string {
	t.Helper()
	nav := regexp.MustCompile(`(?s)<nav class="pager" aria-label="` + regexp.QuoteMeta(label) + `">.*?</nav>`).FindString(body)
	m := regexp.MustCompile(`href="([^"]*)" rel="` + rel + `"`).FindStringSubmatch(nav)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// rowsOf are the values of attr on a table's rows.
func rowsOf(body, table, attr string) []string {
	section := regexp.MustCompile(`(?s)<table class="data" id="` + table + `">.*?</table>`).FindString(body)
	var out []string
	for _, m := range regexp.MustCompile(`<tr `+attr+`="([^"]+)"`).FindAllStringSubmatch(section, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// TestConsole_AdaptersPages: the adapters page shows 50 adapters at a
// time, by name, with Next and Previous links that name the page by an
// adapter's id; a stale cursor shows the first page.
func TestConsole_AdaptersPages(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	f.w.mu.Lock()
	for i := 119; i >= 0; i-- { // created in reverse: the page is by name
		name := fmt.Sprintf("ad-%03d", i)
		names = append(names, name)
		f.w.adapters[u.TenantID+"/"+name] = &nozzle.Adapter{ID: f.w.nextID("ad_"), TenantID: u.TenantID, Name: name, CreatedAt: time.Now(),
			AdapterManifest: nozzle.AdapterManifest{SHA256: fmt.Sprintf("%064x", i+1), Rank: 8, TargetModules: []string{"q_proj"}, SizeBytes: 1000}}
	}
	f.w.mu.Unlock()
	slices.Sort(names)
	const label = "Pages of adapters"

	resp, body := b.page("/console/adapters")
	wantConsoleStatus(t, resp, 200, body)
	if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[:50]) {
		t.Fatalf("first page: %v", got)
	}
	if pagerLink(t, body, label, "prev") != "" {
		t.Error("the first page links to a previous one")
	}
	// The storage used counts every adapter, not the page's 50.
	if !strings.Contains(body, `id="storage-text"><strong>117.2 KiB</strong>`) {
		t.Errorf("storage: %s", regexp.MustCompile(`(?s)id="storage-text">.*?</p>`).FindString(body))
	}
	next := pagerLink(t, body, label, "next")
	if !strings.HasPrefix(next, "/console/adapters?after=ad_") {
		t.Fatalf("next link %q", next)
	}
	_, body = b.page(next)
	if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[50:100]) {
		t.Fatalf("second page: %v", got)
	}
	prev := pagerLink(t, body, label, "prev")
	next = pagerLink(t, body, label, "next")
	if !strings.HasPrefix(prev, "/console/adapters?before=ad_") || next == "" {
		t.Fatalf("second page's links: %q, %q", prev, next)
	}
	_, body = b.page(next)
	if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[100:]) || pagerLink(t, body, label, "next") != "" {
		t.Fatalf("last page: %v, next %q", got, pagerLink(t, body, label, "next"))
	}
	// Previous from the last page is the second page again, and from
	// there the first, which has no Previous.
	_, body = b.page(pagerLink(t, body, label, "prev"))
	if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[50:100]) || pagerLink(t, body, label, "next") != next {
		t.Fatalf("back to the second page: %v, next %q", got, pagerLink(t, body, label, "next"))
	}
	_, body = b.page(pagerLink(t, body, label, "prev"))
	if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[:50]) || pagerLink(t, body, label, "prev") != "" {
		t.Fatalf("back to the first page: %v", got)
	}
	// A cursor that names nothing (an adapter deleted since, another
	// tenant's, a mangled address) shows the first page.
	for _, path := range []string{"/console/adapters?after=ad_nope", "/console/adapters?before=xyz", "/console/adapters?after=a&before=b"} {
		resp, body = b.page(path)
		wantConsoleStatus(t, resp, 200, body)
		if got := rowsOf(body, "adapters-table", "data-adapter"); !slices.Equal(got, names[:50]) {
			t.Fatalf("%s: %v", path, got)
		}
	}
	// The page's script reads the same pages as JSON.
	resp, body = b.api(http.MethodGet, "/console/api/adapters?limit=2&after="+f.adapterID(u.TenantID, "ad-010"), "")
	wantConsoleStatus(t, resp, 200, body)
	if !strings.Contains(body, `"name":"ad-011"`) || !strings.Contains(body, `"name":"ad-012"`) || !strings.Contains(body, `"has_more":true`) || !strings.Contains(body, `"tier":"disk"`) {
		t.Fatalf("console api page: %s", body)
	}
	resp, body = b.api(http.MethodGet, "/console/api/adapters?limit=0", "")
	wantConsoleStatus(t, resp, 400, body)
}

func (f *consoleFixture) adapterID(tenantID, name string) string {
	defer f.w.lock()()
	return f.w.adapters[tenantID+"/"+name].ID
}

// addKeys gives tenantID n more keys, a second apart, of which the first
// (oldest) revoked are revoked, a minute apart. It returns the tenant's
// active keys, newest first, and its revoked ones, the last revoked first.
func (f *consoleFixture) addKeys(tenantID string, n, revokedN int) (active, revoked []string) {
	start := time.Now().Add(-time.Hour)
	defer f.w.lock()()
	for _, k := range f.w.keys {
		if k.TenantID == tenantID && k.RevokedAt.IsZero() {
			active = append(active, k.ID)
		}
	}
	for i := range n {
		k := &nozzle.APIKey{ID: f.w.nextID("key_"), TenantID: tenantID, Name: fmt.Sprint("k", i), Prefix: "nz-x…y", Digest: fmt.Sprintf("%064x", i+1),
			Scopes: nozzle.AllScopes, CreatedAt: start.Add(time.Duration(i) * time.Second)}
		if i < revokedN {
			k.RevokedAt = start.Add(time.Duration(i) * time.Minute)
			revoked = append(revoked, k.ID)
		} else {
			active = append(active, k.ID)
		}
		f.w.keys[k.Digest] = k
	}
	slices.Reverse(active)
	slices.Reverse(revoked)
	return active, revoked
}

// TestConsole_KeysPages: active keys and revoked ones page apart, each
// with its own links; paging one keeps the other's place, and paging the
// revoked keys keeps their fold open.
func TestConsole_KeysPages(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	// 70 more keys, the first 60 revoked.
	active, revoked := f.addKeys(u.TenantID, 70, 60)
	if len(active) != 11 {
		t.Fatalf("%d active keys", len(active))
	}

	_, body := b.page("/console/keys")
	if got := rowsOf(body, "keys-table", "data-key"); !slices.Equal(got, active) {
		t.Fatalf("active keys: %v, want %v", got, active)
	}
	if got := rowsOf(body, "revoked-table", "data-key"); !slices.Equal(got, revoked[:50]) {
		t.Fatalf("revoked keys, first page: %v", got)
	}
	if pagerLink(t, body, "Pages of active keys", "next") != "" || !strings.Contains(body, "<summary>Revoked keys</summary>") ||
		!strings.Contains(body, `<details class="revoked-keys" id="revoked-keys">`) {
		t.Fatalf("one page of active keys, more than one of revoked ones, folded:\n%s", body)
	}
	next := pagerLink(t, body, "Pages of revoked keys", "next")
	if next != "/console/keys?revoked_after="+revoked[49] {
		t.Fatalf("revoked keys' next link %q", next)
	}
	_, body = b.page(next)
	if got := rowsOf(body, "revoked-table", "data-key"); !slices.Equal(got, revoked[50:]) {
		t.Fatalf("revoked keys, second page: %v", got)
	}
	if !strings.Contains(body, `<details class="revoked-keys" id="revoked-keys" open>`) {
		t.Error("paging the revoked keys folds them")
	}
	if got := rowsOf(body, "keys-table", "data-key"); !slices.Equal(got, active) {
		t.Fatalf("active keys while paging revoked ones: %v", got)
	}
	if prev := pagerLink(t, body, "Pages of revoked keys", "prev"); prev != "/console/keys?revoked_before="+revoked[50] {
		t.Fatalf("revoked keys' previous link %q", prev)
	}
	// Both lists' cursors in one address: each list keeps its own.
	f.w.mu.Lock()
	for i := range 50 {
		k := &nozzle.APIKey{ID: f.w.nextID("key_"), TenantID: u.TenantID, Name: fmt.Sprint("new", i), Prefix: "nz-x…y", Digest: fmt.Sprintf("e%063x", i+1),
			Scopes: nozzle.AllScopes, CreatedAt: time.Now()}
		f.w.keys[k.Digest] = k
	}
	f.w.mu.Unlock()
	_, body = b.page("/console/keys?revoked_after=" + revoked[49])
	activeNext := pagerLink(t, body, "Pages of active keys", "next")
	if !strings.Contains(activeNext, "revoked_after="+revoked[49]) || !strings.Contains(activeNext, "after=key_") {
		t.Fatalf("the active keys' next link drops the revoked keys' place: %q", activeNext)
	}
	_, body = b.page(activeNext)
	if got := rowsOf(body, "keys-table", "data-key"); !slices.Equal(got, active) {
		t.Fatalf("active keys, second page: %v", got)
	}
	if got := rowsOf(body, "revoked-table", "data-key"); !slices.Equal(got, revoked[50:]) {
		t.Fatalf("revoked keys kept on their second page: %v", got)
	}
}

// TestConsole_OperatorTenantsPages: the operator's tenants page shows 50
// tenants at a time, oldest first.
func TestConsole_OperatorTenantsPages(t *testing.T) {
	f := newConsoleFixture(t)
	op := f.operator()
	var made []string
	for i := range 55 {
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants", fmt.Sprintf(`{"name": "tenant-%02d"}`, i))
		wantConsoleStatus(t, resp, http.StatusCreated, body)
		made = append(made, fmt.Sprintf("tenant-%02d", i))
	}
	_, body := op.page("/console/operator")
	if got := rowsOf(body, "tenants-table", "data-tenant"); !slices.Equal(got, made[:50]) {
		t.Fatalf("first page: %v", got)
	}
	if !strings.Contains(body, `data-testid="tenants-total"`) {
		t.Error("no total row")
	}
	next := pagerLink(t, body, "Pages of tenants", "next")
	_, body = op.page(next)
	if got := rowsOf(body, "tenants-table", "data-tenant"); !slices.Equal(got, made[50:]) {
		t.Fatalf("second page (%s): %v", next, got)
	}
	if pagerLink(t, body, "Pages of tenants", "next") != "" || pagerLink(t, body, "Pages of tenants", "prev") == "" {
		t.Fatal("the last page's links")
	}
}

// TestConsole_OperatorTenantKeysPages: the operator's page of a tenant
// shows its keys 50 at a time, active and revoked apart, as the tenant's
// keys page does, with Next and Previous links.
func TestConsole_OperatorTenantKeysPages(t *testing.T) {
	f := newConsoleFixture(t)
	f.tenantUser("acme")
	f.tenantUser("bolt")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	// 120 more keys, the first 10 revoked.
	active, revoked := f.addKeys(u.TenantID, 120, 10)
	if len(active) != 111 {
		t.Fatalf("%d active keys", len(active))
	}

	op := f.operator()
	path := "/console/operator/tenants/" + u.TenantID
	_, body := op.page(path)
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[:50]) {
		t.Fatalf("active keys, first page: %v, want %v", got, active[:50])
	}
	if got := rowsOf(body, "tenant-revoked-table", "data-key"); !slices.Equal(got, revoked) {
		t.Fatalf("revoked keys: %v, want %v", got, revoked)
	}
	if !strings.Contains(body, `<details class="revoked-keys" id="tenant-revoked-keys">`) || !strings.Contains(body, "<summary>Revoked keys (10)</summary>") ||
		pagerLink(t, body, "Pages of revoked keys", "next") != "" || pagerLink(t, body, "Pages of active keys", "prev") != "" {
		t.Fatalf("one page of revoked keys, folded, and no previous page of active ones:\n%s", body)
	}
	// the revoked keys have no Revoke button; the active ones do
	revokedTable := regexp.MustCompile(`(?s)<table class="data" id="tenant-revoked-table">.*?</table>`).FindString(body)
	if strings.Contains(revokedTable, "<button") || strings.Count(body, `data-confirm-label="Revoke key"`) != 50 {
		t.Errorf("Revoke buttons: %d, want one per active key shown", strings.Count(body, `data-confirm-label="Revoke key"`))
	}

	// Next, Next: the rest, 50 and 11.
	next := pagerLink(t, body, "Pages of active keys", "next")
	if next != path+"?after="+active[49] {
		t.Fatalf("active keys' next link %q", next)
	}
	_, body = op.page(next)
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[50:100]) {
		t.Fatalf("active keys, second page: %v", got)
	}
	if got := rowsOf(body, "tenant-revoked-table", "data-key"); !slices.Equal(got, revoked) {
		t.Fatalf("revoked keys while paging active ones: %v", got)
	}
	second := next
	next = pagerLink(t, body, "Pages of active keys", "next")
	_, body = op.page(next)
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[100:]) {
		t.Fatalf("active keys, third page: %v", got)
	}
	if pagerLink(t, body, "Pages of active keys", "next") != "" {
		t.Error("a next link on the last page")
	}

	// Previous, Previous: back to the first page.
	prev := pagerLink(t, body, "Pages of active keys", "prev")
	if prev != path+"?before="+active[100] {
		t.Fatalf("active keys' previous link %q", prev)
	}
	_, body = op.page(prev)
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[50:100]) {
		t.Fatalf("active keys, back on the second page: %v", got)
	}
	if n := pagerLink(t, body, "Pages of active keys", "next"); n == "" {
		t.Error("no next link back on the second page")
	}
	_, body = op.page(pagerLink(t, body, "Pages of active keys", "prev"))
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[:50]) {
		t.Fatalf("active keys, back on the first page: %v", got)
	}
	if pagerLink(t, body, "Pages of active keys", "prev") != "" || pagerLink(t, body, "Pages of active keys", "next") == "" {
		t.Error("back on the first page: want a next link only")
	}

	// another tenant's keys are not listed
	b, _ := f.deps.Users.UserByEmail(t.Context(), "dev@bolt.test")
	bolt, _ := f.deps.Keys.Keys(t.Context(), b.TenantID)
	_, body = op.page(second)
	for _, k := range bolt {
		if strings.Contains(body, `data-key="`+k.ID+`"`) {
			t.Errorf("bolt's key %s on acme's page", k.ID)
		}
	}
	// a stale cursor shows the first page
	_, body = op.page(path + "?after=key_nope")
	if got := rowsOf(body, "tenant-keys-table", "data-key"); !slices.Equal(got, active[:50]) {
		t.Errorf("a stale cursor: %v", got)
	}
}
