package gateway

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

const legacyWeather = `"functions":[{"name":"get_weather","description":"Weather of a city.",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`

// TestFunctions_Refused: the legacy functions, function_call, an
// assistant's function_call and function messages are refused as tools,
// tool_choice, tool_calls and tool messages are, naming the legacy
// parameter; functions are not mixed with tools.
func TestFunctions_Refused(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"Weather in Bern?"}]`
	for _, tc := range []struct {
		name, body  string
		code, param string // OpenAI's error code and param
		message     string
	}{
		{"WithTools", `{"model":"base",` + legacyWeather + `,"tools":[{"type":"function","function":{"name":"f"}}],` + msgs + `}`,
			"invalid_parameter_combination", "functions", "The legacy 'functions' cannot be given with 'tools'; give them all as 'tools'."},
		{"WithToolChoice", `{"model":"base",` + legacyWeather + `,"tool_choice":"auto",` + msgs + `}`,
			"invalid_parameter_combination", "tool_choice", "'tool_choice' cannot be given with the legacy 'functions'; use 'function_call'."},
		{"NotArray", `{"model":"base","functions":{"name":"f"},` + msgs + `}`,
			"invalid_type", "functions", "Invalid type for 'functions': expected an array of objects."},
		{"ItemNotObject", `{"model":"base","functions":["get_weather"],` + msgs + `}`,
			"invalid_type", "functions[0]", "Invalid type for 'functions[0]': expected an object."},
		{"TooMany", `{"model":"base","functions":[` + strings.Repeat(`{},`, 128) + `{}],` + msgs + `}`,
			"array_above_max_length", "functions", "Invalid 'functions': array too long. Expected an array with maximum length 128, but got an array with length 129 instead."},
		{"NoName", `{"model":"base","functions":[{"name":"f"},{"description":"x"}],` + msgs + `}`,
			"missing_required_parameter", "functions[1].name", "Missing required parameter: 'functions[1].name'."},
		{"BadName", `{"model":"base","functions":[{"name":"get weather"}],` + msgs + `}`,
			"invalid_value", "functions[0].name", "Invalid 'functions[0].name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'."},
		{"NameTwice", `{"model":"base","functions":[{"name":"f"},{"name":"f"}],` + msgs + `}`,
			"invalid_value", "functions[1].name", `Invalid 'functions': function name "f" is given twice.`},
		// members known by their exact names, and given once, as a tool's
		{"NameCased", `{"model":"base","functions":[{"NAME":"f"}],` + msgs + `}`,
			"missing_required_parameter", "functions[0].name", "Missing required parameter: 'functions[0].name'."},
		{"NameGivenTwice", `{"model":"base","functions":[{"name":"f","name":"g"}],` + msgs + `}`,
			"", "functions[0].name", "Duplicate key in the request body: 'functions[0].name' is given more than once; give each parameter once."},
		{"ParametersNotObject", `{"model":"base","functions":[{"name":"f","parameters":[1]}],` + msgs + `}`,
			"invalid_type", "functions[0].parameters", "Invalid type for 'functions[0].parameters': expected an object (a JSON Schema)."},
		{"DescriptionNotString", `{"model":"base","functions":[{"name":"f","description":1}],` + msgs + `}`,
			"invalid_type", "functions[0].description", "Invalid type for 'functions[0].description': expected a string."},
		{"CallWithoutFunctions", `{"model":"base","function_call":{"name":"get_weather"},` + msgs + `}`,
			"invalid_value", "function_call", "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified."},
		{"CallWithEmptyFunctions", `{"model":"base","functions":[],"function_call":{"name":"get_weather"},` + msgs + `}`,
			"invalid_value", "function_call", "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified."},
		{"CallUnknown", `{"model":"base",` + legacyWeather + `,"function_call":{"name":"get_time"},` + msgs + `}`,
			"invalid_value", "function_call.name", `Invalid 'function_call': no function named "get_time" in 'functions'.`},
		{"CallRequired", `{"model":"base",` + legacyWeather + `,"function_call":"required",` + msgs + `}`,
			"invalid_value", "function_call", `Invalid value for 'function_call': "required"; use "none", "auto" or {"name": …}.`},
		{"CallToolShape", `{"model":"base",` + legacyWeather + `,"function_call":{"type":"function","function":{"name":"get_weather"}},` + msgs + `}`,
			"invalid_value", "function_call", `Invalid 'function_call': expected "none", "auto" or {"name": …}.`},
		{"CallBadWithoutFunctions", `{"model":"base","function_call":"sometimes",` + msgs + `}`,
			"invalid_value", "function_call", `Invalid value for 'function_call': "sometimes"; use "none", "auto" or {"name": …}.`},
		{"ForcedWithFormat", `{"model":"base",` + legacyWeather + `,"function_call":{"name":"get_weather"},"response_format":{"type":"json_object"},` + msgs + `}`,
			"invalid_parameter_combination", "function_call", `A forced function call ('function_call' {"name":"get_weather"}) cannot also follow 'response_format'.`},
		{"MessageCallNoName", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"arguments":"{}"}}]}`,
			"missing_required_parameter", "messages[1].function_call.name", "Missing required parameter: 'messages[1].function_call.name'."},
		{"MessageCallNoArguments", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":"f"}}]}`,
			"missing_required_parameter", "messages[1].function_call.arguments", "Missing required parameter: 'messages[1].function_call.arguments'."},
		{"MessageCallArgumentsObject", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":"f","arguments":{}}}]}`,
			"invalid_type", "messages[1].function_call.arguments", "Invalid type for 'messages[1].function_call.arguments': expected a string (the arguments as JSON)."},
		{"MessageCallNotObject", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":"f"}]}`,
			"invalid_type", "messages[1].function_call", "Invalid type for 'messages[1].function_call': expected an object with a 'name' and 'arguments'."},
		{"MessageCallNotAssistant", `{"model":"base","messages":[{"role":"user","content":"x","function_call":{"name":"f","arguments":"{}"}}]}`,
			"invalid_value", "messages[0].function_call", "Invalid 'messages[0]': only assistant messages carry 'function_call'."},
		{"MessageCallAndToolCalls", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"},` +
			`"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
			"invalid_parameter_combination", "messages[1].function_call", "Invalid 'messages[1]': 'function_call' cannot be given with 'tool_calls'."},
		{"FunctionMessageNoName", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"function","content":"{}"}]}`,
			"missing_required_parameter", "messages[1].name", "Missing required parameter: 'messages[1].name'."},
		{"FunctionMessageToolCalls", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"function","name":"f","content":"{}",` +
			`"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
			"invalid_value", "messages[1].tool_calls", "Invalid 'messages[1]': only assistant messages carry 'tool_calls'."},
		{"FunctionMessageContentType", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"function","name":"f","content":{"temp":19}}]}`,
			"invalid_type", "messages[1].content", "Invalid type for 'messages[1].content': expected a string or an array of content parts."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseChat([]byte(tc.body), 16)
			e := nozzle.AsError(err)
			if e == nil {
				t.Fatalf("accepted: %v", err)
			}
			kind := errorKinds[e.Code]
			if kind.status != http.StatusBadRequest || kind.typ != "invalid_request_error" || e.Reason != tc.code || e.Param != tc.param || e.Message != tc.message {
				t.Errorf("got %d %s %s %s %q", kind.status, kind.typ, e.Reason, e.Param, e.Message)
			}
		})
	}
}

// TestFunctions_Parse: the legacy functions become the tools the runtime
// renders, function_call its tool_choice; an assistant's function_call
// becomes its one tool call and the function message after it the tool
// message answering it, under the same id; "none" and "auto" without
// functions are no-ops, as tool_choice's are without tools.
func TestFunctions_Parse(t *testing.T) {
	j, err := parseChat([]byte(`{"model":"base",`+legacyWeather+`,"function_call":{"name":"get_weather"},"messages":[`+
		`{"role":"user","content":"Weather in Bern?"},`+
		`{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}},`+
		`{"role":"function","name":"get_weather","content":"{\"temp\":19}"},`+
		`{"role":"assistant","content":"Sunny.","function_call":{"name":"get_weather","arguments":"{\"city\":\"Basel\"}"}},`+
		`{"role":"function","name":"get_weather","content":null}]}`), 16)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"type":"function","function":{"name":"get_weather","description":"Weather of a city.","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`
	if !j.functions || string(j.tools) != want || j.toolChoice != "get_weather" {
		t.Errorf("functions %v, tools %s, choice %q", j.functions, j.tools, j.toolChoice)
	}
	m := j.messages
	if len(m) != 5 || len(m[1].ToolCalls) != 1 || len(m[3].ToolCalls) != 1 {
		t.Fatalf("messages %+v", m)
	}
	first, second := m[1].ToolCalls[0], m[3].ToolCalls[0]
	if first.ID != "call00001" || first.Type != "function" || first.Function.Name != "get_weather" || first.Function.Arguments != `{"city":"Bern"}` {
		t.Errorf("first call %+v", first)
	}
	if m[2].Role != "tool" || m[2].ToolCallID != first.ID || m[2].Name != "get_weather" || m[2].Content != `{"temp":19}` {
		t.Errorf("first result %+v", m[2])
	}
	if second.ID != "call00003" || m[3].Content != "Sunny." || m[4].Role != "tool" || m[4].ToolCallID != second.ID || m[4].Content != "" {
		t.Errorf("second call %+v, result %+v", m[3], m[4])
	}

	// "none": the functions are checked, not offered; "auto": offered,
	// nothing forced.
	j, err = parseChat([]byte(`{"model":"base",`+legacyWeather+`,"function_call":"none","messages":[{"role":"user","content":"x"}]}`), 16)
	if err != nil || j.tools != nil || j.toolChoice != "" || !j.functions {
		t.Errorf("none: %v %s %q", err, j.tools, j.toolChoice)
	}
	j, err = parseChat([]byte(`{"model":"base",`+legacyWeather+`,"function_call":"auto","messages":[{"role":"user","content":"x"}]}`), 16)
	if err != nil || j.tools == nil || j.toolChoice != "" {
		t.Errorf("auto: %v %s %q", err, j.tools, j.toolChoice)
	}
	// No functions: function_call "none" or "auto" changes nothing, and a
	// request with tools is read as before.
	for _, body := range []string{
		`{"model":"base","function_call":"auto","functions":[],"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"base","function_call":"none","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}`,
	} {
		j, err := parseChat([]byte(body), 16)
		if err != nil || j.functions || strings.Contains(body, `"tools"`) != (j.tools != nil) {
			t.Errorf("%s: %v %v %s", body, err, j.functions, j.tools)
		}
	}
	// A function message without a call before it answers one of its own
	// id (which templates that pair them refuse, as a tool message's).
	j, err = parseChat([]byte(`{"model":"base","messages":[{"role":"user","content":"x"},{"role":"function","name":"f","content":"1"}]}`), 16)
	if err != nil || j.messages[1].Role != "tool" || j.messages[1].ToolCallID != "call00001" {
		t.Errorf("%v %+v", err, j.messages)
	}
}

// TestFunctions_Templates: a legacy conversation (functions, an
// assistant's function_call, the function's result) renders through real
// chat templates exactly as the same conversation in tools' form, with
// the ids the gateway gives: Mistral's, which pairs calls and results by
// ids of 9 letters and digits and refuses others, and Qwen3's (Hermes).
func TestFunctions_Templates(t *testing.T) {
	legacy := `{"model":"base",` + legacyWeather + `,"messages":[{"role":"user","content":"Weather in Bern?"},` +
		`{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}},` +
		`{"role":"function","name":"get_weather","content":"{\"temp\":19}"}]}`
	tools := `{"model":"base","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather of a city.",` +
		`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"messages":[{"role":"user","content":"Weather in Bern?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call00001","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}}]},` +
		`{"role":"tool","name":"get_weather","tool_call_id":"call00001","content":"{\"temp\":19}"}]}`
	for _, tc := range []struct{ model, template string }{{"llama2", "mistral-v3-tools.jinja"}, {"qwen3", ""}} {
		t.Run(tc.model, func(t *testing.T) {
			tok := templateTokenizer(t, tc.model, tc.template)
			render := func(body string) string {
				t.Helper()
				j, err := parseChat([]byte(body), 16)
				if err != nil {
					t.Fatal(err)
				}
				out, err := tok.ApplyChatTemplateVars(j.messages, true, map[string]any{"tools": j.tools})
				if err != nil {
					t.Fatalf("render: %v", err)
				}
				return out
			}
			got, want := render(legacy), render(tools)
			if got != want || !strings.Contains(got, `{"temp":19}`) || !strings.Contains(got, "get_weather") {
				t.Errorf("legacy:\n%s\ntools:\n%s", got, want)
			}
			if tc.template != "" && strings.Count(got, "call00001") != 2 {
				t.Errorf("Mistral's prompt without the call's id in the call and its result:\n%s", got)
			}
		})
	}
}

// templateTokenizer loads a test model's tokenizer from the runtime's
// test data, with template (one of its templates) as its chat template
// when given.
func templateTokenizer(t *testing.T, model, template string) *tokenizer.Tokenizer {
	t.Helper()
	src := filepath.Join("..", "runtime", "tokenizer", "testdata")
	dir := t.TempDir()
	gz, err := os.ReadFile(filepath.Join(src, "models", model, "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tj, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	cj, err := os.ReadFile(filepath.Join(src, "models", model, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{tokenizer.TokenizerFile: tj, tokenizer.TokenizerConfigFile: cj}
	if template != "" {
		if files[tokenizer.ChatTemplateFile], err = os.ReadFile(filepath.Join(src, "templates", template)); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
