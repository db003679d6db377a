package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// BenchmarkServe_StreamFirstByte16Prompts measures a streamed legacy
// completion of 16 prompts of 32 tokens on the demo model: the time to
// the response's first byte (its status line), and to its first data
// event (the first token of any prompt), reported as ms/first-byte and
// ms/first-event.
func BenchmarkServe_StreamFirstByte16Prompts(b *testing.B) {
	m := MustRunMain(b)
	key := m.demoKey(b)
	url := "http://" + m.Addr + "/v1/completions"
	prompts := make([]string, 16)
	for i := range prompts {
		words := make([]string, 32)
		for k := range words {
			words[k] = fmt.Sprintf("w%d", (i*32+k)%97)
		}
		prompts[i] = fmt.Sprintf("%q", strings.Join(words, " "))
	}
	body := `{"model":"base","stream":true,"max_tokens":8,"temperature":0,"prompt":[` + strings.Join(prompts, ",") + `]}`
	run := func() (firstByte, firstEvent time.Duration) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotFirstResponseByte: func() { firstByte = time.Since(start) },
		}))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") && firstEvent == 0 {
				firstEvent = time.Since(start)
			}
		}
		return firstByte, firstEvent
	}
	run() // warm up: the engine, the key's cache
	b.ResetTimer()
	var fb, fe time.Duration
	for i := 0; i < b.N; i++ {
		x, y := run()
		fb += x
		fe += y
	}
	b.ReportMetric(float64(fb.Microseconds())/1e3/float64(b.N), "ms/first-byte")
	b.ReportMetric(float64(fe.Microseconds())/1e3/float64(b.N), "ms/first-event")
}
