package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/web"
)

// defaultOperatorEmail is operator_email's default (DefaultConfig), and
// signs the operator in to the console when it is set empty.
const defaultOperatorEmail = "operator@nozzle.local"

// consoleExtensions mounts the web console and the ledger maintenance
// routes on the gateway.
func (m *Main) consoleExtensions() ([]gateway.Extension, error) {
	key, err := m.secret("", "console-key")
	if err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(key)
	if err != nil || len(raw) < 24 {
		return nil, fmt.Errorf("console key in %s is damaged: delete it to make a new one (sessions end)", filepath.Join(m.Config.Data, "console-key"))
	}
	// 24 random bytes, hex-encoded: 48 bytes of key material.
	return []gateway.Extension{
		gateway.Console(gateway.ConsoleConfig{
			Static: web.Static, Templates: web.Templates, Layouts: web.Layouts,
			SigningKey: []byte(key), InsecureCookie: m.Config.ConsoleInsecureCookies,
		}),
		gateway.Maintenance(ledgerMaintainer{m.Ledger}),
	}, nil
}

// ensureOperator creates (or updates) the console's operator account from
// the configured credentials, generating the password on first start.
func (m *Main) ensureOperator(ctx context.Context) (email, passwordFile string, err error) {
	email = m.Config.OperatorEmail
	if email == "" {
		email = defaultOperatorEmail
	}
	password := string(m.Config.OperatorPassword)
	if password == "" {
		if password, err = m.secret("", "operator-password"); err != nil {
			return "", "", err
		}
		passwordFile = filepath.Join(m.Config.Data, "operator-password")
	}
	if err := gateway.EnsureOperator(ctx, m.Ledger, strings.TrimSpace(email), password); err != nil {
		return "", "", fmt.Errorf("operator account %s: %w", email, err)
	}
	return email, passwordFile, nil
}
