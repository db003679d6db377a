package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"

	"github.com/ardanlabs/jinja"
)

// The Jinja engine's own tojson sorts keys and escapes HTML when indenting
// and knows no sort_keys or ensure_ascii. Chat templates are rewritten to
// call tojsonFilter instead, which follows transformers' override:
// json.dumps(x, ensure_ascii=False, indent=…, separators=…, sort_keys=…).
const tojsonFilter = "__nozzle_tojson"

// The engine's trim strips what Go's unicode.IsSpace calls space;
// Python's str.strip, which Jinja's trim calls, also strips U+001C to
// U+001F. Templates are rewritten to call trimFilter (Gemma's trim every
// message).
const trimFilter = "__nozzle_trim"

var (
	tojsonRe = regexp.MustCompile(`\|\s*tojson\b`)
	trimRe   = regexp.MustCompile(`\|\s*trim\b`)
)

// rewriteFilters replaces "| tojson" and "| trim" inside {{ … }} and
// {% … %} tags with the renderer's own filters.
func rewriteFilters(src string) string {
	if !strings.Contains(src, "tojson") && !strings.Contains(src, "trim") {
		return src
	}
	var b strings.Builder
	for {
		i := strings.Index(src, "{")
		if i < 0 || i+1 >= len(src) {
			b.WriteString(src)
			return b.String()
		}
		var closer string
		switch src[i+1] {
		case '{':
			closer = "}}"
		case '%':
			closer = "%}"
		case '#':
			closer = "#}"
		default:
			b.WriteString(src[:i+1])
			src = src[i+1:]
			continue
		}
		j := strings.Index(src[i+2:], closer)
		if j < 0 {
			b.WriteString(src)
			return b.String()
		}
		end := i + 2 + j + len(closer)
		tag := src[i:end]
		if closer != "#}" {
			tag = tojsonRe.ReplaceAllString(tag, "|"+tojsonFilter)
			tag = trimRe.ReplaceAllString(tag, "|"+trimFilter)
		}
		b.WriteString(src[:i])
		b.WriteString(tag)
		src = src[end:]
	}
}

// trimCallable is Jinja's trim(value, chars=None): Python's
// str(value).strip(chars).
func trimCallable() jinja.Value {
	return jinja.NewCallable(trimFilter, func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 {
			return jinja.Undefined(), fmt.Errorf("trim: missing value")
		}
		s := valueText(args[0])
		chars, ok := kwargs["chars"]
		if len(args) > 1 {
			chars, ok = args[1], true
		}
		if ok && !chars.IsNone() && !chars.IsUndefined() {
			return jinja.NewString(strings.Trim(s, valueText(chars))), nil
		}
		return jinja.NewString(strings.TrimFunc(s, pyIsSpace)), nil
	})
}

// pyIsSpace is Python's str.isspace for one character.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || 0x1c <= r && r <= 0x1f
}

func tojsonCallable() jinja.Value {
	return jinja.NewCallable(tojsonFilter, func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 {
			return jinja.Undefined(), fmt.Errorf("tojson: missing value")
		}
		o := jsonOpts{item: ", ", key: ": "}
		if v, ok := kwargs["indent"]; ok && !v.IsNone() && !v.IsUndefined() {
			o.indented = true
			o.item = ","
			switch {
			case v.IsInt():
				o.indent = strings.Repeat(" ", max(0, int(v.AsInt())))
			case v.IsString():
				o.indent = v.AsString()
			default:
				return jinja.Undefined(), fmt.Errorf("tojson: indent must be an integer or a string")
			}
		}
		if v, ok := kwargs["separators"]; ok && !v.IsNone() && !v.IsUndefined() {
			if !v.IsList() || len(v.AsList().Items) != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
				return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings")
			}
			o.item, o.key = v.AsList().Items[0].AsString(), v.AsList().Items[1].AsString()
		}
		if v, ok := kwargs["sort_keys"]; ok {
			o.sortKeys = v.IsTruthy()
		}
		if v, ok := kwargs["ensure_ascii"]; ok {
			o.ensureASCII = v.IsTruthy()
		}
		var b strings.Builder
		if err := o.encode(&b, args[0], 0); err != nil {
			return jinja.Undefined(), err
		}
		return jinja.NewString(b.String()), nil
	})
}

type jsonOpts struct {
	indented    bool
	indent      string
	item, key   string
	sortKeys    bool
	ensureASCII bool
}

func (o *jsonOpts) newline(b *strings.Builder, depth int) {
	b.WriteByte('\n')
	for range depth {
		b.WriteString(o.indent)
	}
}

// encode writes v the way Python's json.dumps does.
func (o *jsonOpts) encode(b *strings.Builder, v jinja.Value, depth int) error {
	if depth > 100 {
		return fmt.Errorf("tojson: nested too deeply")
	}
	switch {
	case v.IsNone(), v.IsUndefined():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		b.WriteString(pyFloat(v.AsFloat()))
	case v.IsString():
		o.str(b, v.AsString())
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, x := range items {
			if i > 0 {
				b.WriteString(o.item)
			}
			if o.indented {
				o.newline(b, depth+1)
			}
			if err := o.encode(b, x, depth+1); err != nil {
				return err
			}
		}
		if o.indented {
			o.newline(b, depth)
		}
		b.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := append([]string(nil), d.Keys...)
		if len(keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		if o.sortKeys {
			sort.Strings(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(o.item)
			}
			if o.indented {
				o.newline(b, depth+1)
			}
			o.str(b, k)
			b.WriteString(o.key)
			if err := o.encode(b, d.Data[k], depth+1); err != nil {
				return err
			}
		}
		if o.indented {
			o.newline(b, depth)
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("tojson: cannot serialize %s", v.String())
	}
	return nil
}

func (o *jsonOpts) str(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || (o.ensureASCII && r >= 0x7f):
				if r > 0xFFFF {
					r1, r2 := utf16.EncodeRune(r)
					fmt.Fprintf(b, `\u%04x\u%04x`, r1, r2)
				} else {
					fmt.Fprintf(b, `\u%04x`, r)
				}
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloat formats f like Python's repr(float).
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expS, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expS)
	if exp < -4 || exp >= 16 {
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, exp)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// jsonValue decodes JSON into template values, keeping the order of object
// keys (Python dicts keep insertion order, and tojson shows it).
func jsonValue(raw []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Undefined(), fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeJSONValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := dec.Token()
			return jinja.NewList(items), err
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				v, err := decodeJSONValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(k.(string), v)
			}
			_, err := dec.Token()
			return d, err
		}
	case json.Number:
		if !strings.ContainsAny(string(t), ".eE") {
			if n, err := t.Int64(); err == nil {
				return jinja.NewInt(n), nil
			}
		}
		f, err := t.Float64()
		return jinja.NewFloat(f), err
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	}
	return jinja.Undefined(), fmt.Errorf("unexpected JSON token %v", tok)
}
