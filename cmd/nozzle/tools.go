package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// toolFlags are the flags the ledger tools share: where the ledger is, and
// how to reach a running server that holds it.
type toolFlags struct {
	data, addr, adminToken string
	// addrGiven: the server's address was named (--addr or NOZZLE_ADDR),
	// not left at the default.
	addrGiven bool
	// noLedger: there is no ledger file in data, and the tools ask the
	// server instead (rather than because it holds the file).
	noLedger bool
	// settings are billing settings given as flags (--idle-policy,
	// --dedicated-rate-per-hour): a report read from the ledger file
	// takes them over the server's config file and environment.
	settings []string
}

// registerBilling adds the flags of the billing settings a report read
// from the ledger file splits and compares with, for a server started
// with them as flags (which the tools cannot read back).
func (t *toolFlags) registerBilling(fs *flag.FlagSet) {
	for _, f := range []struct{ name, help string }{
		{"idle-policy", "who carries idle GPU time in a report read from the ledger file: prorata or operator (default: NOZZLE_IDLE_POLICY or the config file's, as the server)"},
		{"dedicated-rate-per-hour", "hourly price of a dedicated GPU in a report read from the ledger file (default: NOZZLE_DEDICATED_RATE_PER_HOUR or the config file's, as the server)"},
	} {
		fs.Func(f.name, f.help, func(v string) error {
			t.settings = append(t.settings, "--"+f.name, v)
			return nil
		})
	}
}

func (t *toolFlags) register(fs *flag.FlagSet) {
	def := DefaultConfig()
	fs.StringVar(&t.data, "data", envOr("NOZZLE_DATA", def.Data), "data folder holding ledger.db (env NOZZLE_DATA)")
	t.addr = def.Addr
	if v, ok := os.LookupEnv("NOZZLE_ADDR"); ok {
		t.addr, t.addrGiven = v, true
	}
	fs.Var(addrFlag{t}, "addr", "`HOST:PORT` of a running nozzle, asked when it holds the ledger or there is no ledger file in the data folder (env NOZZLE_ADDR)")
	fs.StringVar(&t.adminToken, "admin-token", os.Getenv("NOZZLE_ADMIN_TOKEN"), "admin token of that nozzle (default: DATA/admin-token; env NOZZLE_ADMIN_TOKEN)")
}

// addrFlag is --addr, which records that the address was named.
type addrFlag struct{ t *toolFlags }

func (f addrFlag) String() string {
	if f.t == nil {
		return ""
	}
	return f.t.addr
}

func (f addrFlag) Set(v string) error {
	f.t.addr, f.t.addrGiven = v, true
	return nil
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

// openLedger opens the ledger directly. When a running nozzle holds it,
// or there is no ledger file here and a server's address was named
// (--addr, NOZZLE_ADDR) or a nozzle answers at the default one, it
// returns (nil, nil): the caller then asks that server instead.
func (t *toolFlags) openLedger() (*billing.Ledger, error) {
	path := filepath.Join(t.data, "ledger.db")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) && (t.addrGiven || t.nozzleAnswers()) {
			t.noLedger = true
			return nil, nil
		}
		return nil, fmt.Errorf("no ledger at %s (use --data, or --addr for the server holding it): %w", path, unwrapPath(err))
	}
	// The billing settings the server runs with (its config file named by
	// NOZZLE_CONFIG, and NOZZLE_* variables): a report read from the file
	// splits and compares as the server's would.
	cfg, _, err := Load("report", t.settings, os.LookupEnv, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("the server's settings: %w", err)
	}
	l, err := billing.Open(billing.Options{Path: path, LockTimeout: 200 * time.Millisecond,
		IdlePolicy: cfg.IdlePolicy,
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: cfg.PricePrompt, CompletionPerMillionUSD: cfg.PriceCompletion,
			BatchDiscountPercent: cfg.PriceBatchDiscount, CachedPromptPerMillionUSD: cfg.PriceCachedPrompt},
		DedicatedRatePerHour: cfg.DedicatedRatePerHour})
	if errors.Is(err, billing.ErrLocked) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return l, nil
}

// nozzleAnswers says whether a nozzle answers at the address (its
// /healthz), asked when there is no ledger file here and no address was
// named: the server on the default address may hold its ledger elsewhere.
func (t *toolFlags) nozzleAnswers() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + t.addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// admin calls the admin API of the running nozzle that holds the ledger.
func (t *toolFlags) admin(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	token := t.adminToken
	if token == "" {
		b, err := os.ReadFile(filepath.Join(t.data, "admin-token"))
		if err != nil {
			if t.noLedger {
				return nil, fmt.Errorf("no ledger at %s, and no admin token to ask the nozzle at %s (--admin-token or NOZZLE_ADMIN_TOKEN)", filepath.Join(t.data, "ledger.db"), t.addr)
			}
			return nil, fmt.Errorf("the ledger is held by a running nozzle at %s and no admin token was given (--admin-token)", t.addr)
		}
		token = strings.TrimSpace(string(b))
	}
	u := "http://" + t.addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil && t.noLedger {
		return nil, fmt.Errorf("no ledger at %s (use --data) and no nozzle answers at %s (--addr or NOZZLE_ADDR): %w", filepath.Join(t.data, "ledger.db"), t.addr, err)
	}
	if err != nil {
		// Most often a server on another address (NOZZLE_ADDR=… make run)
		// and a tool run without it: say how to name that address.
		return nil, fmt.Errorf("the ledger is held by another process and no nozzle answers at %s (a server on another address? give it with --addr or NOZZLE_ADDR): %w", t.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return nil, fmt.Errorf("nozzle at %s: %s: %s", t.addr, resp.Status, e.Error.Message)
	}
	return resp, nil
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nozzle report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t toolFlags
	t.register(fs)
	t.registerBilling(fs)
	tenant := fs.String("tenant", "", "tenant id or name (default: every tenant, the operator's report)")
	start := fs.String("start", "", "start of the period: RFC 3339, YYYY-MM-DD (00:00 UTC) or unix seconds (default: start of this month, UTC)")
	end := fs.String("end", "", "end of the period, exclusive: RFC 3339, YYYY-MM-DD (through the end of that day) or unix seconds (default: the end of the current month, as the API's)")
	groupBy := fs.String("group-by", "tenant,adapter", "comma-separated: hour, day, adapter, tenant")
	format := fs.String("format", "table", "table, csv or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("report: unexpected argument %q (a flag's value goes after it: --tenant NAME)", fs.Arg(0))
	}
	q, err := reportQuery(*start, *end, *groupBy)
	if err != nil {
		return err
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return fmt.Errorf("--format %q: want table, csv or json", *format)
	}
	l, err := t.openLedger()
	if err != nil {
		return err
	}
	var rep *nozzle.Report
	if l != nil {
		defer l.Close()
		if *tenant != "" {
			tn, err := nozzle.FindTenant(ctx, l, *tenant)
			if err != nil {
				return err
			}
			q.TenantID = tn.ID
		}
		if rep, err = l.Report(ctx, q); err != nil {
			return err
		}
	} else {
		if len(t.settings) > 0 {
			if t.noLedger {
				return fmt.Errorf("--idle-policy and --dedicated-rate-per-hour are for a report read from the ledger file, and there is none at %s: "+
					"the nozzle at %s reports with its own settings (leave them out, or give --data)", filepath.Join(t.data, "ledger.db"), t.addr)
			}
			return fmt.Errorf("--idle-policy and --dedicated-rate-per-hour are for a report read from the ledger file, and the nozzle at %s holds it: "+
				"its reports follow its own settings (leave them out, or stop it first)", t.addr)
		}
		v := url.Values{"start": {q.Start.Format(time.RFC3339)}, "end": {q.End.Format(time.RFC3339)}, "group_by": {strings.Join(q.GroupBy, ",")}}
		if *tenant != "" {
			v.Set("tenant_id", *tenant)
		}
		resp, err := t.admin(ctx, "GET", "/admin/report", v)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		rep = new(nozzle.Report)
		if err := json.NewDecoder(resp.Body).Decode(rep); err != nil {
			return fmt.Errorf("read report: %w", err)
		}
	}
	rep.LabelBaseRows() // as the server's report does
	switch *format {
	case "csv":
		return rep.WriteCSV(stdout)
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return billing.WriteTable(stdout, rep)
}

// reportQuery parses the period and grouping of a report.
func reportQuery(start, end, groupBy string) (nozzle.ReportQuery, error) {
	var q nozzle.ReportQuery
	now := time.Now().UTC()
	q.Start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	q.End = q.Start.AddDate(0, 1, 0)
	var err error
	if start != "" {
		if q.Start, err = nozzle.ParseReportTime(start, false); err != nil {
			return q, fmt.Errorf("--start: %w", err)
		}
	}
	if end != "" {
		if q.End, err = nozzle.ParseReportTime(end, true); err != nil {
			return q, fmt.Errorf("--end: %w", err)
		}
	}
	if !q.End.After(q.Start) {
		if start == "" {
			// the user named no start: say which one the period took
			return q, fmt.Errorf("--end %s is not after the start of this month (%s), where the period starts without --start: give --start too",
				end, q.Start.Format("2006-01-02"))
		}
		if end == "" {
			return q, fmt.Errorf("--start %s is not before the end of this month (%s), where the period ends without --end: give --end too",
				start, q.End.Format("2006-01-02"))
		}
		return q, errors.New("--end must be after --start")
	}
	for _, g := range strings.Split(groupBy, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		switch g {
		case nozzle.GroupHour, nozzle.GroupDay, nozzle.GroupAdapter, nozzle.GroupTenant:
			q.GroupBy = append(q.GroupBy, g)
		default:
			return q, fmt.Errorf("--group-by %q: want hour, day, adapter or tenant", g)
		}
	}
	return q, nil
}

// parseInterspersed parses args with fs, flags before and after the
// positional arguments (nozzle backup FILE --data DIR), and returns the
// positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nozzle backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t toolFlags
	t.register(fs)
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("backup: name the file to write: nozzle backup FILE")
	}
	if len(files) > 1 {
		return fmt.Errorf("backup: one file to write, not %d (%s): nozzle backup FILE", len(files), strings.Join(files, " "))
	}
	dst := files[0]
	if err := checkBackupTarget(filepath.Join(t.data, "ledger.db"), dst); err != nil {
		return err
	}
	l, err := t.openLedger()
	if err != nil {
		return err
	}
	if l != nil {
		defer l.Close()
		if err := l.BackupToFile(dst); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	} else {
		resp, err := t.admin(ctx, "GET", "/admin/backup", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := saveStream(dst, resp.Body); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s (%d bytes)\n", dst, fi.Size())
	return nil
}

// checkBackupTarget refuses a backup that would replace a folder, or the
// ledger or its usage journal: a server holding them would go on writing to
// the file the backup replaced, and lose what it wrote.
func checkBackupTarget(ledgerPath, dst string) error {
	fi, err := os.Stat(dst)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("backup: %w", unwrapPath(err))
	}
	if fi.IsDir() {
		return fmt.Errorf("backup: %s is a folder; name the file to write, e.g. %s", dst, filepath.Join(dst, "ledger-backup.db"))
	}
	for _, p := range billing.Files(ledgerPath) {
		if li, err := os.Stat(p); err == nil && os.SameFile(fi, li) {
			return fmt.Errorf("backup: %s is the ledger's own file %s; write the backup somewhere else", dst, p)
		}
	}
	return nil
}

// saveStream writes r to path atomically.
func saveStream(path string, r io.Reader) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func runLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "Usage: nozzle ledger check [--data DIR] [--addr HOST:PORT] [--admin-token TOKEN]\n(--addr and --admin-token reach the server that holds the ledger while one runs, or one holding it elsewhere where DATA has no ledger)")
		return errUsage
	}
	fs := flag.NewFlagSet("nozzle ledger check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t toolFlags
	t.register(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// flag stops at the first argument: the flags after it would go
		// unread, and another ledger than the one meant be checked
		return fmt.Errorf("ledger check: unexpected argument %q (a flag's value goes after it: --data DIR)", fs.Arg(0))
	}
	l, err := t.openLedger()
	if err != nil {
		return err
	}
	var res nozzle.LedgerCheck
	if l != nil {
		defer l.Close()
		r, err := ledgerMaintainer{l}.Check(ctx)
		if err != nil {
			return err
		}
		res = *r
	} else {
		resp, err := t.admin(ctx, "POST", "/admin/ledger/check", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fmt.Errorf("read check result: %w", err)
		}
	}
	fmt.Fprintf(stdout, "events %d, rollups %d, capacity intervals %d, outbox rows %d, checkpoints of running streams %d, stored responses %d, conversations %d\n",
		res.Events, res.Rollups, res.Intervals, res.OutboxRows, res.Checkpoints, res.Responses, res.Conversations)
	if len(res.Problems) > 0 {
		for _, p := range res.Problems {
			fmt.Fprintln(stdout, "problem:", p)
		}
		return fmt.Errorf("ledger check found %d problem(s)", len(res.Problems))
	}
	fmt.Fprintln(stdout, "ok: every rollup equals the sum of its events")
	return nil
}

// intList parses "1,8,32".
func intList(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// ledgerMaintainer lets the gateway's maintenance routes back up and check
// the ledger it holds.
type ledgerMaintainer struct{ l *billing.Ledger }

func (m ledgerMaintainer) Backup(ctx context.Context, w io.Writer) error { return m.l.Backup(w) }

func (m ledgerMaintainer) Check(ctx context.Context) (*nozzle.LedgerCheck, error) {
	r, err := m.l.Check(ctx)
	if err != nil && !errors.Is(err, billing.ErrInconsistent) {
		return nil, err
	}
	return &r.LedgerCheck, nil
}
