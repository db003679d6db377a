package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// demoTenant is the tenant the demo creates on first start, and
// demoUserEmail its console user (password in DATA/demo-password).
const (
	demoTenant    = "demo"
	demoUserEmail = "demo@nozzle.local"
)

// bootstrap creates what a first start needs: the demo tenant with an API
// key, its console user and the demo adapters (demo model only, and only
// into an empty ledger), and prints how to use them. Each step is skipped
// when done already, and DATA/demo-ready marks them all done: a first
// start cut short (a crash, a kill) is completed by the next one.
func (m *Main) bootstrap(ctx context.Context, store nozzle.AdapterStore, demoAdapters map[string]string) error {
	if demoAdapters == nil {
		m.banner(m.Stdout, "", nil)
		return nil
	}
	keyPath := filepath.Join(m.Config.Data, "demo-api-key")
	readyPath := filepath.Join(m.Config.Data, "demo-ready")
	if _, err := os.Stat(readyPath); err != nil {
		// The copies of demo adapters whose import a crash cut short.
		if stale, err := filepath.Glob(filepath.Join(m.Config.Data, ".import-*")); err == nil {
			for _, d := range stale {
				os.RemoveAll(d)
			}
		}
		if err := m.setUpDemo(ctx, store, demoAdapters, keyPath); err != nil {
			return err
		}
		if err := writeFileAtomic(readyPath, []byte("the demo tenant, key, user and adapters are set up\n"), 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	key, _ := os.ReadFile(keyPath)
	m.banner(m.Stdout, strings.TrimSpace(string(key)), demoAdapters)
	return nil
}

// setUpDemo creates what of the demo is missing: into an empty ledger,
// or completing the demo tenant an interrupted first start left.
func (m *Main) setUpDemo(ctx context.Context, store nozzle.AdapterStore, demoAdapters map[string]string, keyPath string) error {
	tenants, err := m.Ledger.Tenants(ctx)
	if err != nil {
		return err
	}
	var t *nozzle.Tenant
	for _, x := range tenants {
		if x.Name == demoTenant {
			t = x
		}
	}
	switch {
	case t == nil && len(tenants) > 0:
		return nil // the operator's own ledger: no demo in it
	case t == nil:
		t = &nozzle.Tenant{Name: demoTenant}
		if err := m.Ledger.CreateTenant(ctx, t); err != nil {
			return fmt.Errorf("demo tenant: %w", err)
		}
	}
	if !m.demoKeyWorks(ctx, keyPath) {
		secret, err := nozzle.NewKeySecret()
		if err != nil {
			return err
		}
		k := &nozzle.APIKey{TenantID: t.ID, Name: "demo", Prefix: nozzle.KeyDisplayPrefix(secret),
			Digest: nozzle.KeyDigest(secret), Scopes: nozzle.AllScopes}
		if err := m.Ledger.CreateKey(ctx, k); err != nil {
			return fmt.Errorf("demo key: %w", err)
		}
		if err := writeFileAtomic(keyPath, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("save demo key: %w", err)
		}
	}
	password, err := m.secret("", "demo-password")
	if err != nil {
		return err
	}
	if err := gateway.CreateTenantUser(ctx, m.Ledger, t.ID, demoUserEmail, password); err != nil && nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		return fmt.Errorf("demo user: %w", err)
	}
	names := make([]string, 0, len(demoAdapters))
	for name := range demoAdapters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := m.Ledger.Adapter(ctx, t.ID, name); err == nil {
			continue
		}
		if err := m.importAdapter(ctx, store, t.ID, name, demoAdapters[name]); err != nil {
			return fmt.Errorf("demo adapter %s: %w", name, err)
		}
	}
	return nil
}

// demoKeyWorks reports whether DATA/demo-api-key holds a key the ledger
// knows.
func (m *Main) demoKeyWorks(ctx context.Context, keyPath string) bool {
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return false
	}
	secret := strings.TrimSpace(string(b))
	if !nozzle.ValidKeyFormat(secret) {
		return false
	}
	_, err = m.Ledger.KeyByDigest(ctx, nozzle.KeyDigest(secret))
	return err == nil
}

// importAdapter copies an adapter folder into the store and names it for
// a tenant.
func (m *Main) importAdapter(ctx context.Context, store nozzle.AdapterStore, tenantID, name, dir string) error {
	tmp, err := os.MkdirTemp(filepath.Join(m.Config.Data), ".import-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, f := range []string{nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile} {
		if err := copyFile(filepath.Join(dir, f), filepath.Join(tmp, f)); err != nil {
			return err
		}
	}
	man, err := store.Import(ctx, tmp)
	if err != nil {
		return err
	}
	return m.Ledger.CreateAdapter(ctx, &nozzle.Adapter{TenantID: tenantID, Name: name, AdapterManifest: *man})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// banner tells a newcomer what is running and how to talk to it.
func (m *Main) banner(w io.Writer, key string, adapters map[string]string) {
	base := "http://" + m.Addr
	if host, port, ok := strings.Cut(m.Addr, ":"); ok && (host == "0.0.0.0" || host == "" || host == "[::]") {
		base = "http://127.0.0.1:" + port
	}
	password := "(the configured operator_password)"
	if m.operatorPasswordFile != "" {
		password = "password in " + m.operatorPasswordFile
	}
	if adapters == nil {
		fmt.Fprintf(w, "\nNozzle is serving %s at %s\n  Console: %s/console  (sign in as %s, %s)\n  Admin API token in %s\n\n",
			m.modelName(), base, base, m.operator, password, filepath.Join(m.Config.Data, "admin-token"))
		return
	}
	names := make([]string, 0, len(adapters))
	for n := range adapters {
		names = append(names, n)
	}
	sort.Strings(names)
	keyFile := filepath.Join(m.Config.Data, "demo-api-key")
	fmt.Fprintf(w, `
Nozzle is serving the built-in demo model at %s
(random weights: its text is meaningless; serve a real model with --model DIR).

  API key of the demo tenant:  %s   (saved in %s)
  Demo adapters:               %s
  Console:                     %s/console
    the demo tenant:           %s, password in %s
    the operator:              %s, %s

  curl %s/v1/chat/completions \
    -H "Authorization: Bearer $(cat %s)" -H "Content-Type: application/json" \
    -d '{"model": "%s", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'

`, base, key, keyFile, strings.Join(names, ", "), base, demoUserEmail, filepath.Join(m.Config.Data, "demo-password"), m.operator, password,
		base, keyFile, firstOr(names, "base"))
}

// modelName names the served model for the banner.
func (m *Main) modelName() string {
	if m.Runtime == nil && len(m.Config.Upstreams) > 0 {
		return "the models of " + strings.Join(m.Config.Upstreams, ", ")
	}
	if m.Config.Model != "" {
		return filepath.Base(filepath.Clean(m.Config.Model))
	}
	return "the demo model"
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
