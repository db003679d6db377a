package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
	"github.com/nozzle-ai/nozzle"
)

// ErrNoChatTemplate is returned by ApplyChatTemplate when the model has no
// chat template.
var ErrNoChatTemplate = errors.New("the model has no chat template (tokenizer_config.json chat_template or chat_template.jinja)")

// TemplateError is the error a chat template raised with
// raise_exception(message): the template refused the conversation. Its
// Error() is the template's message.
type TemplateError struct {
	Message string
}

func (e *TemplateError) Error() string { return e.Message }

// ApplyChatTemplate renders messages with the model's chat template the way
// transformers' apply_chat_template does (trim_blocks and lstrip_blocks on,
// raise_exception, strftime_now, bos_token/eos_token/unk_token/pad_token,
// tools and documents set to none). Encode the result with ParseSpecial
// true and AddSpecialTokens false: templates usually emit the BOS token
// themselves.
//
// A template that calls raise_exception returns a *TemplateError.
func (t *Tokenizer) ApplyChatTemplate(messages []nozzle.ChatMessage, addGenerationPrompt bool) (string, error) {
	return t.ApplyChatTemplateVars(messages, addGenerationPrompt, nil)
}

// ApplyChatTemplateVars is ApplyChatTemplate with extra template variables
// (for example enable_thinking for Qwen3, date_string, or tools), which
// override the defaults. Values are Go values (bool, string, numbers,
// []any, map[string]any) or json.RawMessage, which keeps the order of
// object keys the way a Python dict does (use it for tools: tojson shows
// the order).
func (t *Tokenizer) ApplyChatTemplateVars(messages []nozzle.ChatMessage, addGenerationPrompt bool, vars map[string]any) (string, error) {
	tmpl, err := t.compiledTemplate()
	if err != nil {
		return "", err
	}
	msgs := make([]jinja.Value, len(messages))
	for i, m := range messages {
		// Keys in insertion order, like a Python dict (tojson keeps it).
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		if m.Name != "" {
			d.AsDict().Set("name", jinja.NewString(m.Name))
		}
		if len(m.ToolCalls) > 0 {
			calls := make([]jinja.Value, len(m.ToolCalls))
			for k, c := range m.ToolCalls {
				calls[k] = toolCallValue(c)
			}
			d.AsDict().Set("tool_calls", jinja.NewList(calls))
		}
		if m.ToolCallID != "" {
			d.AsDict().Set("tool_call_id", jinja.NewString(m.ToolCallID))
		}
		if m.ReasoningContent != "" {
			// an earlier answer's thoughts, for templates that render
			// them (Qwen3's: message.reasoning_content)
			d.AsDict().Set("reasoning_content", jinja.NewString(m.ReasoningContent))
		}
		msgs[i] = d
	}
	var refused *TemplateError
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(msgs),
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"tools":                 jinja.None(),
		"documents":             jinja.None(),
		"bos_token":             jinja.NewString(t.cfg.bosToken),
		"eos_token":             jinja.NewString(t.cfg.eosToken),
		"unk_token":             jinja.NewString(t.cfg.unkToken),
		"pad_token":             jinja.NewString(t.cfg.padToken),
		tojsonFilter:            tojsonCallable(),
		trimFilter:              trimCallable(),
		"raise_exception": jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			msg := "raise_exception called"
			if len(args) > 0 {
				msg = valueText(args[0])
			}
			refused = &TemplateError{Message: msg}
			return jinja.Undefined(), refused
		}),
		"strftime_now": jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) == 0 {
				return jinja.Undefined(), fmt.Errorf("strftime_now: missing format")
			}
			return jinja.NewString(strftime(time.Now(), valueText(args[0]))), nil
		}),
	}
	for k, v := range vars {
		switch v := v.(type) {
		case json.RawMessage:
			jv, err := jsonValue(v)
			if err != nil {
				return "", fmt.Errorf("chat template variable %q: %w", k, err)
			}
			data[k] = jv
		case jinja.Value:
			data[k] = v
		default:
			data[k] = jinja.FromGoValue(v)
		}
	}
	out, err := tmpl.RenderValues(data)
	if err != nil {
		if refused != nil {
			return "", refused
		}
		return "", fmt.Errorf("render chat template: %w", err)
	}
	return out, nil
}

// ReservedVar reports whether name is a variable the renderer sets itself
// (the messages, the generation prompt's switch, tools, documents, the
// special tokens, the functions it provides): variables a request passes
// to the template (chat_template_kwargs) must not replace them.
func ReservedVar(name string) bool {
	switch name {
	case "messages", "add_generation_prompt", "tools", "documents",
		"bos_token", "eos_token", "unk_token", "pad_token",
		"raise_exception", "strftime_now", tojsonFilter, trimFilter:
		return true
	}
	return false
}

// toolCallValue is a tool call as transformers hands it to a template:
// {"id", "type", "function": {"name", "arguments"}} with the arguments a
// dict (key order kept) when they are a JSON object, else their text.
func toolCallValue(c nozzle.ToolCall) jinja.Value {
	args := jinja.NewString(c.Function.Arguments)
	if raw := strings.TrimSpace(c.Function.Arguments); strings.HasPrefix(raw, "{") {
		if v, err := jsonValue(json.RawMessage(raw)); err == nil {
			args = v
		}
	}
	fn := jinja.NewDict()
	fn.AsDict().Set("name", jinja.NewString(c.Function.Name))
	fn.AsDict().Set("arguments", args)
	d := jinja.NewDict()
	d.AsDict().Set("id", jinja.NewString(c.ID))
	d.AsDict().Set("type", jinja.NewString("function"))
	d.AsDict().Set("function", fn)
	return d
}

// ToolFormat says how the chat template teaches the model to call tools
// (nozzle.ToolFormatHermes, ToolFormatLlama3JSON or ToolFormatMistral), or
// "" when it renders no tools or in a way Nozzle does not parse.
func (t *Tokenizer) ToolFormat() string {
	tpl := t.chatTemplate
	switch {
	case !strings.Contains(tpl, "tools"):
		return ""
	case strings.Contains(tpl, "<tool_call>"):
		return nozzle.ToolFormatHermes
	case strings.Contains(tpl, "ipython") && strings.Contains(tpl, `"parameters"`):
		return nozzle.ToolFormatLlama3JSON
	case strings.Contains(tpl, "[TOOL_CALLS]") && strings.Contains(tpl, "[AVAILABLE_TOOLS]"):
		// Mistral's: the tokenizers of version 11 and later (Mistral Small
		// 3.1 and 3.2, Magistral, Devstral) have an [ARGS] control token
		// and write each call as [TOOL_CALLS]name[ARGS]{...}; the earlier
		// ones a JSON array after [TOOL_CALLS]
		if _, ok := t.TokenID(mistralArgs); ok || strings.Contains(tpl, mistralArgs) {
			return nozzle.ToolFormatMistralV11
		}
		return nozzle.ToolFormatMistral
	}
	return ""
}

// Control tokens of Mistral's tool calls of tokenizer version 11 and
// later: [TOOL_CALLS] name [CALL_ID] id [ARGS] {...} (the id is
// optional).
const (
	mistralCalls  = "[TOOL_CALLS]"
	mistralArgs   = "[ARGS]"
	mistralCallID = "[CALL_ID]"
)

// ToolCallTokens returns the ids of the special tokens that the model's
// tool calls are made of and that decoding would leave out (Mistral's
// [TOOL_CALLS], [ARGS] and [CALL_ID] where the format is
// ToolFormatMistralV11): a request that offers tools decodes them as text
// so that its calls can be read.
func (t *Tokenizer) ToolCallTokens() []int {
	if t.ToolFormat() != nozzle.ToolFormatMistralV11 {
		return nil
	}
	return t.specialIDs(mistralCalls, mistralArgs, mistralCallID)
}

// ThinkTags returns the tags between which the model thinks before it
// answers, and whether it does: [THINK] and [/THINK] (Magistral) where
// its vocabulary has both as tokens and its chat template writes both;
// else <think> and </think> (Qwen3, QwQ, DeepSeek-R1 and its distills)
// where its vocabulary has both as tokens or its chat template writes
// both.
func (t *Tokenizer) ThinkTags() (nozzle.ThinkTags, bool) {
	has := func(tags nozzle.ThinkTags) (vocab, template bool) {
		_, hasOpen := t.TokenID(tags.Open)
		_, hasClose := t.TokenID(tags.Close)
		return hasOpen && hasClose, strings.Contains(t.chatTemplate, tags.Open) && strings.Contains(t.chatTemplate, tags.Close)
	}
	if vocab, template := has(nozzle.MistralThinkTags); vocab && template {
		return nozzle.MistralThinkTags, true
	}
	if vocab, template := has(nozzle.DefaultThinkTags); vocab || template {
		return nozzle.DefaultThinkTags, true
	}
	return nozzle.ThinkTags{}, false
}

// Reasoning reports whether the model thinks before it answers (ThinkTags).
func (t *Tokenizer) Reasoning() bool {
	_, ok := t.ThinkTags()
	return ok
}

// ThoughtTokens returns the ids of the thoughts' tags where they are
// special tokens (which decoding would leave out) of a reasoning model:
// a chat completion decodes them as text, so that its thoughts can be
// told from its answer.
func (t *Tokenizer) ThoughtTokens() []int {
	tags, ok := t.ThinkTags()
	if !ok {
		return nil
	}
	return t.specialIDs(tags.Open, tags.Close)
}

// specialIDs returns the ids of those of the tokens that are special.
func (t *Tokenizer) specialIDs(tokens ...string) []int {
	var ids []int
	for _, s := range tokens {
		if id, ok := t.TokenID(s); ok && t.IsSpecial(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// valueText is a value as {{ value }} prints it.
func valueText(v jinja.Value) string {
	if v.IsString() {
		return v.AsString()
	}
	return v.String()
}

func (t *Tokenizer) compiledTemplate() (*jinja.Template, error) {
	t.templateOnce.Do(func() {
		if t.chatTemplate == "" {
			t.templateErr = ErrNoChatTemplate
			return
		}
		t.template, t.templateErr = jinja.Compile(rewriteFilters(t.chatTemplate))
		if t.templateErr != nil {
			t.templateErr = fmt.Errorf("compile chat template: %w", t.templateErr)
		}
	})
	return t.template, t.templateErr
}

// strftime formats tm with a Python strftime format.
func strftime(tm time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		pad := true
		if format[i] == '-' && i+1 < len(format) { // glibc: no padding
			pad = false
			i++
		}
		num := func(v, width int) {
			s := strconv.Itoa(v)
			if pad {
				for len(s) < width {
					s = "0" + s
				}
			}
			b.WriteString(s)
		}
		switch format[i] {
		case 'Y':
			num(tm.Year(), 4)
		case 'y':
			num(tm.Year()%100, 2)
		case 'm':
			num(int(tm.Month()), 2)
		case 'd':
			num(tm.Day(), 2)
		case 'e':
			b.WriteString(fmt.Sprintf("%2d", tm.Day()))
		case 'H':
			num(tm.Hour(), 2)
		case 'I':
			h := tm.Hour() % 12
			if h == 0 {
				h = 12
			}
			num(h, 2)
		case 'M':
			num(tm.Minute(), 2)
		case 'S':
			num(tm.Second(), 2)
		case 'f':
			num(tm.Nanosecond()/1000, 6)
		case 'j':
			num(tm.YearDay(), 3)
		case 'p':
			if tm.Hour() < 12 {
				b.WriteString("AM")
			} else {
				b.WriteString("PM")
			}
		case 'B':
			b.WriteString(tm.Month().String())
		case 'b', 'h':
			b.WriteString(tm.Month().String()[:3])
		case 'A':
			b.WriteString(tm.Weekday().String())
		case 'a':
			b.WriteString(tm.Weekday().String()[:3])
		case 'w':
			num(int(tm.Weekday()), 1)
		case 'Z':
			name, _ := tm.Zone()
			b.WriteString(name)
		case 'z':
			b.WriteString(tm.Format("-0700"))
		case 'F':
			b.WriteString(tm.Format("2006-01-02"))
		case 'T':
			b.WriteString(tm.Format("15:04:05"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
