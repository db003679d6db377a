package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// feedSchema feeds s to a copy of start: whether every byte was taken and
// whether the value is then done.
func feedSchema(start Schema, s string) (fed, done bool) {
	st := start
	for i := 0; i < len(s); i++ {
		if !st.Feed(s[i]) {
			return false, false
		}
	}
	return true, st.Done()
}

const (
	personSchema = `{"type":"object","title":"person","properties":{
		"name":{"type":"string","description":"full name"},
		"age":{"type":"integer"},
		"email":{"type":["string","null"]},
		"tags":{"type":"array","items":{"type":"string"},"maxItems":3},
		"role":{"enum":["admin","administrator","user",null,1,12,1.5]}},
		"required":["name","age"],"additionalProperties":false}`
	treeSchema = `{"$defs":{"node":{"type":"object","properties":{
		"value":{"type":"integer"},
		"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},
		"required":["value"],"additionalProperties":false}},
		"$ref":"#/$defs/node"}`
	shapeSchema = `{"type":"object","properties":{"a":{"anyOf":[
		{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]},
		{"type":"null"},
		{"type":"array","items":{"type":"boolean"},"minItems":1}]}},"required":["a"]}`
	anySchema    = `{"type":"object","properties":{"meta":{},"data":{"description":"anything"}},"required":["meta"]}`
	prefixSchema = `{"type":"object","properties":{"a":{"type":"integer"},"ab":{"type":"integer"},"abc":{"type":"integer"},
		"q\"k":{"type":"boolean"},"<b>":{"type":"null"},"é":{"type":"string"}}}`
	listSchema = `{"type":"object","properties":{"items":{"type":"array","minItems":1,"items":{"type":"object","properties":{
		"id":{"type":"integer"},"price":{"type":"number"},"ok":{"type":"boolean"}},"required":["id","price","ok"]}}},"required":["items"]}`
	constSchema = `{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"},"pair":{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":2}},"required":["kind","r"]}`
	enumSchema  = `{"enum":["a","ab",{"k":[1,2]},[1],true,"x<y"]}`
	defsSchema  = `{"definitions":{"step":{"type":"object","properties":{"explanation":{"type":"string"},"output":{"type":"string"}},"required":["explanation","output"],"additionalProperties":false}},
		"type":"object","properties":{"steps":{"type":"array","items":{"$ref":"#/definitions/step"}},"final_answer":{"type":"string"}},"required":["steps","final_answer"],"additionalProperties":false}`
	rootRefSchema  = `{"type":"object","properties":{"name":{"type":"string"},"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["name","next"]}`
	dateTimeSchema = `{"type":"string","format":"date-time"}`
	lengthSchema   = `{"type":"string","minLength":2,"maxLength":3}`
	// objects among alternatives: told apart by a const first property (as
	// Pydantic and Zod write discriminated unions), by the first key, or by
	// an enum's numbers; recursive through $defs
	unionSchema = `{"$defs":{
		"circle":{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"],"additionalProperties":false},
		"rect":{"type":"object","properties":{"kind":{"const":"rect"},"w":{"type":"integer"},"h":{"type":"integer"}},"required":["kind","w","h"],"additionalProperties":false},
		"group":{"type":"object","properties":{"kind":{"enum":["group","set"]},"items":{"type":"array","items":{"$ref":"#/$defs/shape"}}},"required":["kind","items"],"additionalProperties":false},
		"shape":{"oneOf":[{"$ref":"#/$defs/circle"},{"$ref":"#/$defs/rect"},{"$ref":"#/$defs/group"}],"discriminator":{"propertyName":"kind"}}},
		"type":"object","properties":{
		"shape":{"$ref":"#/$defs/shape"},
		"ref":{"anyOf":[{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]},{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"}},"required":["name"]},{"type":"string"},{"type":"null"}]},
		"code":{"anyOf":[{"type":"object","properties":{"v":{"enum":[1,12]},"a":{"type":"boolean"}},"required":["v","a"]},{"type":"object","properties":{"v":{"const":123},"b":{"type":"null"}},"required":["v"]}]}},
		"required":["shape"],"additionalProperties":false}`
	// patterns in the syntax Go's regexp and ECMA-262 share, so that the
	// validator below can run them as they are
	patternSchema = `{"type":"object","properties":{
		"phone":{"type":"string","pattern":"^[0-9]{3}-[0-9]{4}$"},
		"sku":{"type":"string","pattern":"^[A-Z]{2,3}_[0-9]+$","maxLength":8},
		"word":{"type":"string","pattern":"cat|dog"},
		"tail":{"type":"string","pattern":"(ab)+$","minLength":3},
		"uni":{"type":["string","null"],"pattern":"^[\\p{L}]+( [\\p{L}]+)?$"},
		"esc":{"type":"string","pattern":"^a\\\\b\"c\\nd?$"},
		"mail":{"type":"string","format":"email"},
		"host":{"type":"string","format":"hostname"},
		"v4":{"type":"string","format":"ipv4"},
		"v6":{"type":"string","format":"ipv6"},
		"dur":{"type":"string","format":"duration","maxLength":8}},
		"required":["phone","sku","word"],"additionalProperties":false}`
	// what Pydantic writes for datetime, date, time and UUID fields, and
	// for constr(min_length=..., max_length=...)
	formatSchema = `{"type":"object","properties":{
		"at":{"type":"string","format":"date-time","title":"At"},
		"day":{"type":"string","format":"date"},
		"clock":{"anyOf":[{"type":"string","format":"time"},{"type":"null"}]},
		"id":{"type":"string","format":"uuid"},
		"code":{"type":"string","minLength":2,"maxLength":4},
		"note":{"type":["string","null"],"minLength":1},
		"short":{"type":"string","maxLength":1},
		"tags":{"type":"array","items":{"type":"string","maxLength":3},"maxItems":3}},
		"required":["at","day","id","code"],"additionalProperties":false}`
	// numbers with bounds (what Pydantic writes for conint/confloat)
	boundsSchema = `{"type":"object","properties":{
		"age":{"type":"integer","minimum":0,"maximum":150},
		"temp":{"type":"number","exclusiveMinimum":-273.15,"maximum":1e3},
		"ratio":{"type":"number","minimum":0,"exclusiveMaximum":1},
		"delta":{"type":["integer","null"],"minimum":-5,"exclusiveMaximum":5},
		"seven":{"type":"integer","minimum":7,"maximum":7},
		"half":{"type":"number","maximum":0.5},
		"neg":{"type":"number","minimum":-2.5,"maximum":-0.5},
		"big":{"type":"integer","minimum":-1e30,"maximum":999999999999999999},
		"odd":{"type":"number","exclusiveMinimum":0.999999999999999998,"exclusiveMaximum":1.000000000000000001},
		"list":{"type":"array","items":{"type":"integer","minimum":10,"maximum":12},"maxItems":3}},
		"required":["age"],"additionalProperties":false}`
	tightSchema = `{"type":"number","exclusiveMinimum":0.25,"maximum":0.5}`
)

var schemaCases = []struct {
	schema         string
	accept, refuse []string
}{
	{personSchema,
		[]string{`{"name":"a","age":3}`, `{"name":"a","age":-0,"email":null}`,
			"{ \"name\" : \"a\" ,\n  \"age\" : 30 , \"tags\" : [ \"x\" , \"y\" ] }",
			`{"name":"é\u00e9\n","age":3,"role":"administrator"}`, `{"name":"a","age":3,"role":12}`,
			`{"name":"a","age":3,"role":1}`, `{"name":"a","age":3,"role":1.5}`, `{"name":"a","age":3,"role":null}`,
			`{"name":"a","age":3,"role":"admin"}`, `{"name":"","age":3,"email":"e","tags":[],"role":"user"}`,
			`{"name":"a","age":3,"role":12 }`},
		[]string{`{"age":3,"name":"a"}`, `{"name":"a"}`, `{"name":"a","age":3.5}`, `{"name":"a","age":1e3}`,
			`{"name":"a","age":3,"x":1}`, `{"name":"a","age":3,"tags":["a","b","c","d"]}`,
			`{"name":"a","age":3,"role":"adm"}`, `{"name":"a","age":3,"role":13}`, `{"name":"a","age":3,"role":1.50}`,
			`{"name":"a","age":3,"name":"b"}`, ` {"name":"a","age":3}`, `{"name":"a","age":3} `,
			`{"name":1,"age":3}`, `{"name":"a","age":3,"email":"x","email":null}`, `{"name":"a","age":03}`,
			`{"name":"a","age":3,"role":true}`, `{"name":"a","age":3,}`, "{\"name\":\"\x01\",\"age\":3}",
			"{\"name\":\"\xff\",\"age\":3}", `{"name":"a","age":3,"tags":null}`, `[]`, `{}`}},
	{treeSchema,
		[]string{`{"value":1}`, `{"value":1,"children":[{"value":2},{"value":3,"children":[]}]}`,
			`{"value":1,"children":[{"value":2,"children":[{"value":4}]}]}`},
		[]string{`{"value":1,"children":[{}]}`, `{"value":1,"children":[{"value":2,"x":1}]}`, `{"children":[]}`,
			`{"value":1,"children":{}}`}},
	{shapeSchema,
		[]string{`{"a":null}`, `{"a":{"x":1.5e3}}`, `{"a":[true,false]}`, `{"a":{"x":-0.25}}`},
		[]string{`{"a":[]}`, `{"a":"s"}`, `{"a":{"x":1,"y":2}}`, `{"a":{}}`, `{"a":1}`, `{"a":[null]}`}},
	{anySchema,
		[]string{`{"meta":{"k":[1,{"z":null}],"q":"s"}}`, `{"meta":1,"data":"x"}`, `{"meta":-1.5e-3}`,
			`{"meta":[],"data":{}}`, `{"meta":"\ud83d\ude00 😀"}`, `{"meta":true,"data":[false,null,"x",{"\"":1}]}`},
		[]string{`{"meta":01}`, `{"data":1}`, `{"meta":tru}`, `{"meta":{1:2}}`, `{"meta":[1,]}`, `{"meta":"\x"}`}},
	{prefixSchema,
		[]string{`{}`, `{"a":1,"abc":2}`, `{"ab":1}`, `{"abc":1}`, `{"a":1,"ab":2,"abc":3}`, `{"q\"k":true}`,
			`{"<b>":null}`, `{"a":1,"é":"x"}`, `{"é":""}`},
		[]string{`{"abc":1,"a":2}`, `{"ab":1,"a":2}`, `{"abcd":1}`, `{"b":1}`, `{"\u003cb\u003e":null}`, `{"\u00e9":""}`,
			`{"a":1,"a":2}`, `{"a":1,}`}},
	{listSchema,
		[]string{`{"items":[{"id":1,"price":2.5,"ok":true}]}`, `{"items":[{"id":1,"price":2,"ok":true},{"id":2,"price":0,"ok":false}]}`},
		[]string{`{"items":[]}`, `{"items":[{"id":1,"price":2.5}]}`, `{"items":[{"id":1.0,"price":2.5,"ok":true}]}`}},
	{constSchema,
		[]string{`{"kind":"circle","r":1}`, `{"kind":"circle","r":1,"pair":[1,2]}`},
		[]string{`{"kind":"square","r":1}`, `{"kind":"circle","r":1,"pair":[1]}`, `{"kind":"circle","r":1,"pair":[1,2,3]}`,
			`{"kind":"circle"}`}},
	{enumSchema,
		[]string{`"a"`, `"ab"`, `{"k":[1,2]}`, `[1]`, `true`, `"x<y"`},
		[]string{`{"k": [1,2]}`, `"abc"`, `"x\u003cy"`, `false`, `[1,2]`, `"a" `}},
	{`{"type":"integer"}`, []string{`12`, `-0`, `0`, `123456789`}, []string{`1.5`, `12 `, ` 12`, `01`, `1e2`, `-`, `"1"`}},
	{`{"enum":[1,12,-5,"1"]}`, []string{`1`, `12`, `-5`, `"1"`}, []string{`123`, `1 `, `-`, `2`, `"12"`}},
	{`{"const":{"b":1,"a":[true]}}`, []string{`{"b":1,"a":[true]}`}, []string{`{"a":[true],"b":1}`, `{"b":1}`}},
	{`{"type":["integer","null"]}`, []string{`5`, `null`}, []string{`5.0`, `"5"`}},
	{`{"type":"number"}`, []string{`12`, `-0.5e+3`, `1E9`}, []string{`1.`, `.5`, `1e`, `--1`}},
	{`{"type":["string","null"]}`, []string{`"x"`, `null`}, []string{`nul`, `1`, `"x"x`}},
	{`{}`, []string{`1`, `"s"`, `{"a":[1,2]}`, `null`, `[{}]`}, []string{`{"a":}`, `[1 2]`, ``}},
	{`{"type":"object"}`, []string{`{}`, `{"any":[1,"x"]}`}, []string{`[]`, `{"a"}`}},
	{`{"type":"object","additionalProperties":false}`, []string{`{}`, `{ }`}, []string{`{"a":1}`}},
	{`{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":2}`,
		[]string{`[1,2]`, `[ 1 , 2 ]`}, []string{`[1]`, `[1,2,3]`, `[]`, `[1,2.5]`}},
	{`{"type":"array"}`, []string{`[]`, `[1,"a",{"b":[]}]`}, []string{`[,]`, `{}`}},
	// Pydantic's tuple[int, str] and tuple[int, ...] after a str:
	// prefixItems, then items (or none after "items": false).
	{`{"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"minItems":2,"maxItems":2}`,
		[]string{`[1,"a"]`, `[ -3 , "" ]`}, []string{`["a",1]`, `[1]`, `[1,"a",2]`, `[1,2]`, `[]`}},
	{`{"type":"array","prefixItems":[{"type":"string"},{"enum":["x","y"]}],"items":{"type":"integer"},"minItems":1}`,
		[]string{`["a"]`, `["a","x"]`, `["a","y",1,2,3]`}, []string{`[]`, `[1]`, `["a","z"]`, `["a","x","b"]`}},
	// allOf of one schema, as Pydantic 1 wraps a described $ref.
	{`{"$defs":{"c":{"enum":["red","blue"]}},"type":"object","properties":{"c":{"allOf":[{"$ref":"#/$defs/c"}],"description":"a colour"}},"required":["c"]}`,
		[]string{`{"c":"red"}`}, []string{`{"c":"green"}`, `{}`}},
	{tupleSchema, []string{`{"t":[1]}`, `{"t":[1,["ab",true],"a","b"]}`, `{"t":[1,[]]}`},
		[]string{`{"t":[]}`, `{"t":[1,["abc"]]}`, `{"t":[1,["a",true,1]]}`, `{"t":[1,[],"c"]}`, `{"t":[1,[],"a","a","a","a"]}`}},
	{`{"type":"array","prefixItems":[{"type":"boolean"},{"type":"null"}],"items":false}`,
		[]string{`[]`, `[true]`, `[false,null]`}, []string{`[true,null,1]`, `[null]`}},
	{`{"type":"object","properties":{"p":{"type":"array","prefixItems":[{"type":"number"},{"type":"number"}],"minItems":2,"maxItems":2}},"required":["p"]}`,
		[]string{`{"p":[1.5,-2]}`}, []string{`{"p":[1.5]}`, `{"p":[1,2,3]}`}},
	{defsSchema,
		[]string{`{"steps":[{"explanation":"e","output":"o"}],"final_answer":"x"}`, `{"steps":[],"final_answer":""}`},
		[]string{`{"steps":[{"explanation":"e"}],"final_answer":"x"}`, `{"final_answer":"x"}`}},
	{rootRefSchema,
		[]string{`{"name":"a","next":null}`, `{"name":"a","next":{"name":"b","next":null}}`},
		[]string{`{"name":"a"}`, `{"name":"a","next":{"name":"b"}}`}},
	{dateTimeSchema,
		[]string{`"2024-01-31T23:59:59Z"`, `"2024-02-29t00:00:00z"`, `"2000-02-29T12:30:00+05:30"`, `"1999-12-31T23:59:60-23:59"`,
			`"0000-02-29T00:00:00Z"`, `"2024-06-30T08:09:10.5Z"`, `"2024-06-30T08:09:10.123456789+00:00"`, `"9999-04-30T19:00:00-00:00"`},
		[]string{`"2024-01-31T23:59:59"`, `"2024-01-31 23:59:59Z"`, `"2024-13-01T00:00:00Z"`, `"2024-00-01T00:00:00Z"`,
			`"2024-01-00T00:00:00Z"`, `"2024-01-32T00:00:00Z"`, `"2024-04-31T00:00:00Z"`, `"2023-02-29T00:00:00Z"`,
			`"1900-02-29T00:00:00Z"`, `"2024-02-30T00:00:00Z"`, `"2024-01-01T24:00:00Z"`, `"2024-01-01T23:60:00Z"`,
			`"2024-01-01T23:59:61Z"`, `"2024-01-01T23:59:59.Z"`, `"2024-01-01T23:59:59.1234567890Z"`,
			`"2024-01-01T23:59:59+24:00"`, `"2024-01-01T23:59:59+05:60"`, `"2024-01-01T23:59:59+0530"`, `"2024-01-01T23:59:59ZZ"`,
			`"2024-01-01"`, `"24-01-01T00:00:00Z"`, `"2024-01-01T00:00:00Z" `, `"2024\u002d01-01T00:00:00Z"`, `1`, `null`}},
	{`{"type":["string","null"],"format":"date"}`,
		[]string{`"2024-01-01"`, `"2024-12-31"`, `"2024-02-29"`, `null`},
		[]string{`"2024-1-01"`, `"2024-01-01T00:00:00Z"`, `"2025-02-29"`, `"2024-06-31"`, `""`, `"2024/01/01"`}},
	{`{"type":"string","format":"time"}`,
		[]string{`"00:00:00Z"`, `"23:59:60.999+14:00"`, `"12:00:00-08:00"`, `"08:30:00z"`},
		[]string{`"12:00:00"`, `"12:00Z"`, `"24:00:00Z"`, `"12:00:00.Z"`, `"T12:00:00Z"`}},
	{`{"type":"string","format":"uuid"}`,
		[]string{`"123e4567-e89b-12d3-a456-426614174000"`, `"123E4567-E89B-12D3-A456-426614174000"`, `"00000000-0000-0000-0000-000000000000"`},
		[]string{`"123e4567e89b12d3a456426614174000"`, `"123e4567-e89b-12d3-a456-42661417400"`, `"123e4567-e89b-12d3-a456-4266141740000"`,
			`"g23e4567-e89b-12d3-a456-426614174000"`, `"{123e4567-e89b-12d3-a456-426614174000}"`, `""`}},
	{lengthSchema,
		[]string{`"ab"`, `"abc"`, `"é中"`, `"😀😀😀"`, `"\n\t"`, `"\u00e9\""`, `"\ud83d\ude00\ud83d\ude00"`, `"a\ud83d\ude00b"`,
			`"\ud83d\ud83d"`, `"\ude00\ud83d\ude00"`, `"\ud83d\ud83d\ude00"`, `"\ud83da"`, `"\ud83d\n\ud83d"`},
		[]string{`""`, `"a"`, `"abcd"`, `"😀"`, `"\ud83d\ude00"`, `"é中😀a"`, `"\n\t\r\b"`, `"\ud83d\ud83d\ud83d\ud83d"`,
			`"\ud83d\ude00\ud83d\ude00\ud83d\ude00\ud83d\ude00"`, `"ab`}},
	{`{"type":"string","maxLength":1}`,
		[]string{`""`, `"a"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\udE00"`, `"😀"`, `"\\"`},
		[]string{`"ab"`, `"\ud83d\ud83d"`, `"\ud83d\u0041"`, `"\ud83d\n"`, `"\ud83da"`, `"😀a"`}},
	{`{"type":"string","minLength":3}`,
		[]string{`"abc"`, `"abcdefghijklmnopqrstuvwxyz"`, `"\ud83d\ude00ab"`, `"\ud83d\ud83d\ud83d"`},
		[]string{`"ab"`, `"\ud83d\ude00\ud83d\ude00"`, `"😀😀"`, `""`}},
	{`{"type":"string","maxLength":0}`, []string{`""`}, []string{`"a"`, `"\u0000"`}},
	{`{"type":"integer","multipleOf":5}`, []string{`0`, `-0`, `5`, `-15`, `1000`, `999999999999999995`}, []string{`1`, `-7`, `12`, `5.0`, `1e1`}},
	{`{"type":["integer","null"],"multipleOf":7,"exclusiveMinimum":-10,"maximum":30}`,
		[]string{`-7`, `0`, `28`, `14`, `null`}, []string{`-14`, `35`, `29`, `3`}},
	{`{"type":"integer","multipleOf":1000,"minimum":1500,"maximum":4500}`, []string{`2000`, `3000`, `4000`}, []string{`1000`, `1500`, `5000`, `2500`}},
	{unionSchema,
		[]string{`{"shape":{"kind":"circle","r":1.5}}`, `{"shape":{"kind":"rect","w":2,"h":3}}`, `{"shape":{"kind":"group","items":[]}}`,
			`{"shape":{"kind":"set","items":[{"kind":"circle","r":1},{"kind":"group","items":[{"kind":"rect","w":1,"h":1}]}]}}`,
			`{"shape": { "kind" : "circle" , "r" : 0 } , "ref" : {"id":7}}`, `{"shape":{"kind":"circle","r":1},"ref":{"name":"x","n":2}}`,
			`{"shape":{"kind":"circle","r":1},"ref":{"name":"x"}}`, `{"shape":{"kind":"circle","r":1},"ref":"x","code":{"v":12,"a":true}}`,
			`{"shape":{"kind":"circle","r":1},"ref":null,"code":{"v":1,"a":false}}`, `{"shape":{"kind":"circle","r":1},"code":{"v":123}}`,
			`{"shape":{"kind":"circle","r":1},"code":{"v":123,"b":null}}`},
		[]string{`{"shape":{"kind":"circle","w":1,"h":1}}`, `{"shape":{"kind":"rect","r":1}}`, `{"shape":{"kind":"rect","w":1}}`,
			`{"shape":{"kind":"square","r":1}}`, `{"shape":{}}`, `{"shape":{"r":1,"kind":"circle"}}`, `{"shape":{"kind":"circle","r":1,"w":2}}`,
			`{"shape":{"kind":"rect","w":1.5,"h":1}}`, `{"shape":{"kind":"group","items":[{"kind":"circle"}]}}`,
			`{"shape":{"kind":"circle","r":1},"ref":{"id":1,"name":"x"}}`, `{"shape":{"kind":"circle","r":1},"ref":{"name":"x","id":1}}`,
			`{"shape":{"kind":"circle","r":1},"ref":{}}`, `{"shape":{"kind":"circle","r":1},"code":{"v":12}}`,
			`{"shape":{"kind":"circle","r":1},"code":{"v":1234,"a":true}}`, `{"shape":{"kind":"circle","r":1},"code":{"v":123,"a":true}}`,
			`{"shape":{"kind":"circle","r":1},"code":{"v":2,"a":true}}`}},
	{patternSchema,
		[]string{`{"phone":"555-1234","sku":"AB_1","word":"a cat"}`, `{"phone":"555-1234","sku":"ABC_1234","word":"dog","tail":"xxab"}`,
			`{"phone":"000-0000","sku":"XY_0","word":"hotdogs","uni":"Zoë Ångström","esc":"a\\b\"c\n","mail":"first.last+tag@mail.example.com"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","uni":null,"esc":"a\\b\"c\nd","host":"a-1.example","v4":"192.168.0.255"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","v6":"::ffff:10.0.0.1","dur":"P1Y2M3D"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","v6":"2001:db8::1","dur":"PT1H30M"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","v6":"1:2:3:4:5:6:7:8","dur":"P2W"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","host":"localhost","v4":"0.0.0.0","v6":"::"}`},
		[]string{`{"phone":"5551234","sku":"AB_1","word":"cat"}`, `{"phone":"555-1234 ","sku":"AB_1","word":"cat"}`,
			`{"phone":"555-1234","sku":"AB_123456","word":"cat"}`, `{"phone":"555-1234","sku":"ab_1","word":"cat"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"bird"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","tail":"abx"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","tail":"ab"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","uni":"a1"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","esc":"a\\bc\n"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","esc":"a\u005cb\"c\n"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","mail":"a@b"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","mail":".a@b.c"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","host":"-a.b"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","host":"a..b"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","v4":"1.2.3.256"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","v4":"01.2.3.4"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","v6":"1::2::3"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","v6":"12345::"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","dur":"P"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","dur":"PT"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"cat","dur":"P1Y1D"}`, `{"phone":"555-1234","sku":"AB_1","word":"cat","dur":"P1Y2M3DT4H"}`,
			`{"phone":"555-1234","sku":"AB_1","word":"ca\u0074"}`}},
	{`{"type":"string","pattern":""}`, []string{`""`, `"anything 😀"`}, []string{`"\u0041"`, `"a`}},
	{`{"type":"string","pattern":"^$"}`, []string{`""`}, []string{`"a"`, `" "`}},
	{`{"type":"string","pattern":"^(?:é|😀)+$"}`, []string{`"é"`, `"😀é😀"`}, []string{`""`, `"e"`, `"\u00e9"`, "\"\xc3\"", `"é "`}},
	{`{"type":"string","pattern":"x","minLength":2,"maxLength":3}`, []string{`"xa"`, `"aax"`, `"😀x"`}, []string{`"x"`, `"aaax"`, `"ab"`}},
	{`{"type":"string","pattern":"^[^a-z]*$"}`, []string{`""`, `"ABC 123"`, `"\n\t\"\\"`, `"中"`}, []string{`"a"`, `"Ab"`}},
	{boundsSchema,
		[]string{`{"age":0}`, `{"age":150,"temp":-273.14,"ratio":0.999999999999999999,"delta":-5,"seven":7,"half":0.5,"neg":-2.5,"big":-999999999999999999}`,
			`{"age":-0,"temp":1000,"ratio":0,"delta":null,"half":-1,"neg":-0.5,"big":999999999999999999}`,
			`{"age":7,"temp":-273.149999999999999999,"ratio":-0,"delta":4,"half":-0.500000000000000001,"neg":-1}`,
			`{"age":99,"odd":0.999999999999999999,"list":[10,11,12]}`, `{"age":99,"odd":1,"list":[]}`, `{"age":99,"odd":1.000000000000000000}`,
			`{"age":1 ,"temp":0.0,"ratio":0.5 }`},
		[]string{`{"age":151}`, `{"age":-1}`, `{"age":1.5}`, `{"age":1e2}`, `{"age":0,"temp":-273.15}`, `{"age":0,"temp":-273.150000000000000001}`, `{"age":0,"half":-1e0}`, `{"age":0,"temp":1000.000000000000000001}`,
			`{"age":0,"temp":1001}`, `{"age":0,"temp":1e2}`, `{"age":0,"ratio":1}`, `{"age":0,"ratio":-0.1}`, `{"age":0,"ratio":1.0}`,
			`{"age":0,"delta":5}`, `{"age":0,"delta":-6}`, `{"age":0,"seven":8}`, `{"age":0,"seven":70}`, `{"age":0,"seven":-7}`,
			`{"age":0,"half":0.500000000000000001}`, `{"age":0,"half":0.6}`, `{"age":0,"neg":-0.4}`, `{"age":0,"neg":0}`, `{"age":0,"neg":-2.51}`,
			`{"age":0,"big":1000000000000000000}`, `{"age":0,"big":-1000000000000000000}`, `{"age":0,"odd":0.999999999999999998}`,
			`{"age":0,"odd":1.000000000000000001}`, `{"age":0,"odd":0.9999999999999999985}`, `{"age":0,"list":[9]}`, `{"age":0,"list":[13]}`,
			`{"age":0,"ratio":0.1234567890123456789}`}},
	{tightSchema,
		[]string{`0.5`, `0.250000000000000001`, `0.26`, `0.3`, `0.49999`, `0.5000`},
		[]string{`0.25`, `0.2`, `0.51`, `0`, `-0`, `1`, `0.`, `5e-1`, `.3`, `-0.3`, `0.500000000000000001`}},
	{`{"type":"integer","minimum":1,"maximum":10}`, []string{`1`, `5`, `10`}, []string{`0`, `-0`, `11`, `-1`, `100`, `1.0`, `01`, `1e1`}},
	{`{"type":"number","minimum":-2.5,"maximum":-0.5}`, []string{`-2.5`, `-0.5`, `-1`, `-2.49999`, `-0.50`, `-2.500`},
		[]string{`-0.4`, `-2.51`, `0`, `-0`, `-3`, `1`, `-1e0`, `-0.499999999999999999`}},
	{`{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1}`, []string{`0.5`, `0.000000000000000001`, `0.999999999999999999`},
		[]string{`0`, `1`, `-0`, `0.0`, `1.0`, `0.9999999999999999999`, `1e-1`, `0.0000000000000000001`}},
	{`{"type":"number","maximum":0.5}`, []string{`0.5`, `-100`, `0.499`, `-0.5`, `0`, `-999999999999999999.999999999999999999`},
		[]string{`0.51`, `0.500000000000000001`, `1`, `5e-1`, `-1000000000000000000`}},
	{`{"type":"integer","minimum":-3,"maximum":3}`, []string{`-3`, `-0`, `0`, `3`, `-1`}, []string{`-4`, `4`, `-30`, `30`, `0.0`}},
	{`{"type":"integer","minimum":7,"maximum":7}`, []string{`7`}, []string{`8`, `70`, `-7`, `6`, `7.0`}},
	{`{"type":"number","minimum":7,"maximum":7}`, []string{`7`, `7.0`, `7.000000000000000000`}, []string{`7.01`, `70`, `6.999999999999999999`}},
	{`{"type":"integer","minimum":-1e30,"maximum":1e30}`, []string{`999999999999999999`, `-999999999999999999`, `0`, `-12`},
		[]string{`1000000000000000000`, `-1000000000000000000`, `1e3`}},
	{`{"type":"number","minimum":123456789012345678}`,
		[]string{`123456789012345678`, `999999999999999999.5`, `123456789012345678.000000000000000001`, `200000000000000000`},
		[]string{`123456789012345677.999999999999999999`, `-1`, `12345678901234567`, `1000000000000000000`}},
	{`{"type":"number","minimum":0,"exclusiveMinimum":true,"maximum":10,"exclusiveMaximum":false}`, []string{`0.1`, `10`, `0.000000000000000001`},
		[]string{`0`, `-0`, `10.0000001`, `0.0`}},
	{`{"type":"number","minimum":2.5E-2,"maximum":1e3}`, []string{`0.025`, `1000`, `999.999`, `0.0250`}, []string{`0.0249`, `1000.000000000000000001`, `1001`, `0.02`}},
	{`{"type":"integer","exclusiveMinimum":-1.5,"maximum":2.5}`, []string{`-1`, `2`, `0`}, []string{`-2`, `3`, `2.5`}},
	{`{"type":"number","minimum":1,"exclusiveMinimum":1}`, []string{`1.5`, `1.000000000000000001`}, []string{`1`, `1.0`, `0.5`}},
	{`{"type":["integer","string"],"minimum":10}`, []string{`10`, `"abc"`, `123`}, []string{`9`, `10.5`, `-10`}},
	{`{"type":"number","maximum":0e-99999999999999999999,"exclusiveMinimum":-1e999999999999999999999}`, []string{`0`, `-0`, `-5.5`}, []string{`0.1`, `1`}},
	{formatSchema,
		[]string{`{"at":"2024-05-01T10:00:00Z","day":"2024-05-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab"}`,
			`{"at":"2024-05-01T10:00:00.25+02:00","day":"2024-05-01","clock":"10:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000","code":"abcd","note":null,"short":"","tags":["abc","",""]}`},
		[]string{`{"at":"2024-05-01T10:00:00Z","day":"2024-05-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"a"}`,
			`{"at":"2024-05-01","day":"2024-05-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab"}`,
			`{"at":"2024-05-01T10:00:00Z","day":"2024-05-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","note":""}`,
			`{"at":"2024-05-01T10:00:00Z","day":"2024-05-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","tags":["abcd"]}`}},
}

func TestSchema_Language(t *testing.T) {
	for _, tc := range schemaCases {
		start, err := CompileSchema([]byte(tc.schema))
		if err != nil {
			t.Fatalf("%s: %v", tc.schema, err)
		}
		for _, s := range tc.accept {
			if fed, done := feedSchema(start, s); !fed || !done {
				t.Errorf("%s\n  %q: fed %v done %v, want accepted", tc.schema, s, fed, done)
			}
			if !validJSONFor(t, tc.schema, s) {
				t.Errorf("%s\n  %q: the test's validator refuses it", tc.schema, s)
			}
		}
		for _, s := range tc.refuse {
			if fed, done := feedSchema(start, s); fed && done {
				t.Errorf("%s\n  %q: accepted, want refused", tc.schema, s)
			}
		}
	}
}

func TestSchema_Depth(t *testing.T) {
	start, err := CompileSchema([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	ok := strings.Repeat("[", MaxSchemaDepth) + strings.Repeat("]", MaxSchemaDepth)
	deep := strings.Repeat("[", MaxSchemaDepth+1) + strings.Repeat("]", MaxSchemaDepth+1)
	if fed, done := feedSchema(start, ok); !fed || !done {
		t.Errorf("%d deep refused", MaxSchemaDepth)
	}
	if fed, _ := feedSchema(start, deep); fed {
		t.Errorf("%d deep accepted", MaxSchemaDepth+1)
	}
	sp := "[" + strings.Repeat(" ", MaxSpace) + "]"
	if fed, done := feedSchema(start, sp); !fed || !done {
		t.Errorf("%d spaces refused", MaxSpace)
	}
	if fed, _ := feedSchema(start, "["+strings.Repeat(" ", MaxSpace+1)+"]"); fed {
		t.Errorf("%d spaces accepted", MaxSpace+1)
	}
}

func TestCompileSchema_Errors(t *testing.T) {
	nested := `{"type":"string"}`
	for range MaxSchemaDepth + 1 {
		nested = `{"type":"array","items":` + nested + `}`
	}
	var many strings.Builder
	many.WriteString(`{"type":"object","properties":{`)
	for i := range MaxSchemaNodes {
		fmt.Fprintf(&many, `"p%d":{"type":"string"},`, i)
	}
	many.WriteString(`"z":{}}}`)
	bigEnum := `{"enum":[0` + strings.Repeat(`,1`, MaxSchemaEnum) + `]}`
	for _, tc := range []struct{ schema, want string }{
		{`{"type":"object","properties":{"a/b":{"type":"string","pattern":"(?=x)"}}}`, `schema: /properties/a~1b/pattern: "(?=x)": lookahead and lookbehind are not supported`},
		{`{"type":"string","pattern":"(a)\\1"}`, `backreferences are not supported`},
		{`{"type":"string","pattern":"\\bword"}`, `word boundaries`},
		{`{"type":"string","pattern":"(?i)a"}`, `inline flags are not supported`},
		{`{"type":"string","pattern":"[a-"}`, `schema: /pattern: "[a-": a class without its closing ]`},
		{`{"type":"string","pattern":"a{2,1}"}`, `invalid repeat count`},
		{`{"type":"string","pattern":"(ab"}`, `missing closing )`},
		{`{"type":"string","pattern":"\\q"}`, `the escape \q is not supported`},
		{`{"type":"string","pattern":"[\\S]"}`, `\S inside a class`},
		{`{"type":"string","pattern":"\\ud800"}`, `a lone surrogate`},
		{`{"type":"string","pattern":"^\\u0001$"}`, `no string a JSON string can carry matches it`},
		{`{"type":"string","pattern":"^abcd$","maxLength":3}`, `within the length limits`},
		{`{"type":"string","pattern":1}`, `schema: /pattern: must be a string`},
		{`{"type":"string","pattern":"a","format":"date"}`, `"pattern" alongside "format" is not supported`},
		{`{"type":"string","pattern":"` + strings.Repeat("a", MaxPatternBytes+1) + `"}`, `longer than 1024 bytes`},
		{`{"type":"string","pattern":"^[a-z]{1000}$","maxLength":4096}`, `more than 4096 states`},
		{`{"type":"integer","pattern":"a"}`, `string keywords for a type that is not "string"`},
		{`{"type":"object","properties":{"email":{"type":"string","format":"idn-email"}}}`, `schema: /properties/email: "format" "idn-email" is not supported`},
		{`{"type":"object","properties":{"age":{"type":"number","minimum":0,"multipleOf":2}}}`, `schema: /properties/age/multipleOf: is supported on "integer" alone`},
		{`{"type":"integer","multipleOf":0.5}`, `schema: /multipleOf: must be a positive integer`},
		{`{"type":"integer","multipleOf":0}`, `must be a positive integer`},
		{`{"type":"integer","multipleOf":"2"}`, `must be a positive integer`},
		{`{"type":"integer","minimum":1,"maximum":4,"multipleOf":5}`, `schema: /multipleOf: no multiple lies in range`},
		{`{"type":"string","minimum":0}`, `schema: (root): number keywords for a type that is not "number" or "integer"`},
		{`{"type":["string","null"],"exclusiveMaximum":0}`, `number keywords for a type that is not`},
		{`{"minimum":0}`, `"minimum" without "type" is not supported`},
		{`{"enum":[1,2],"maximum":3}`, `"maximum" alongside "enum" or "const" is not supported`},
		{`{"const":1,"type":"integer","exclusiveMinimum":0}`, `"exclusiveMinimum" alongside "enum" or "const" is not supported`},
		{`{"$ref":"#","minimum":1}`, `"minimum" alongside "$ref"`},
		{`{"type":"integer","minimum":5,"maximum":4}`, `schema: /maximum: no integer lies within "minimum" and "maximum"`},
		{`{"type":"integer","minimum":0.2,"maximum":0.8}`, `schema: /maximum: no integer lies within "minimum" and "maximum"`},
		{`{"type":"integer","exclusiveMinimum":3,"exclusiveMaximum":4}`, `schema: /exclusiveMaximum: no integer lies within "exclusiveMinimum" and "exclusiveMaximum"`},
		{`{"type":"number","exclusiveMinimum":1,"exclusiveMaximum":1}`, `schema: /exclusiveMaximum: no number lies within "exclusiveMinimum" and "exclusiveMaximum"`},
		{`{"type":"number","exclusiveMinimum":1,"exclusiveMaximum":1.000000000000000001}`, `no number lies within`},
		{`{"type":"number","minimum":1,"maximum":1,"exclusiveMaximum":true}`, `schema: /maximum: no number lies within "minimum" and "maximum"`},
		{`{"type":"number","minimum":2,"maximum":5,"exclusiveMaximum":1}`, `schema: /exclusiveMaximum: no number lies within "minimum" and "exclusiveMaximum"`},
		{`{"type":"number","minimum":1e18}`, `schema: /minimum: no number of at most 18 integer digits lies in range`},
		{`{"type":"integer","exclusiveMinimum":999999999999999999}`, `schema: /exclusiveMinimum: no integer of at most 18 integer digits lies in range`},
		{`{"type":"number","maximum":-1e20}`, `schema: /maximum: no number of at most 18 integer digits lies in range`},
		{`{"type":"number","minimum":0.1234567890123456789}`, `schema: /minimum: more than 18 digits after the decimal point are not supported`},
		{`{"type":"number","maximum":1e-19}`, `schema: /maximum: more than 18 digits`},
		{`{"type":"number","maximum":1e-999999999999999999999}`, `schema: /maximum: more than 18 digits`},
		{`{"type":"number","minimum":"0"}`, `schema: /minimum: must be a number`},
		{`{"type":"number","exclusiveMaximum":null}`, `schema: /exclusiveMaximum: must be a number`},
		{`{"type":"number","exclusiveMinimum":true}`, `schema: /exclusiveMinimum: true or false only alongside "minimum"`},
		{`{"type":"object","properties":{"a":{"type":"number","exclusiveMaximum":false}}}`, `schema: /properties/a/exclusiveMaximum: true or false only alongside "maximum"`},
		{`{"type":"string","format":"uri"}`, `schema: (root): "format" "uri" is not supported`},
		{`{"type":"string","format":1}`, `schema: (root): "format" 1 is not supported`},
		{`{"type":"integer","format":"int32"}`, `string keywords for a type that is not "string"`},
		{`{"type":"array","maxLength":3}`, `string keywords for a type that is not "string"`},
		{`{"format":"date"}`, `"format" without "type" is not supported`},
		{`{"enum":["a"],"maxLength":3}`, `"maxLength" alongside "enum" or "const" is not supported`},
		{`{"type":"string","format":"date","maxLength":10}`, `"minLength" or "maxLength" alongside "format" "date" is not supported`},
		{`{"type":"string","maxLength":4097}`, `schema: /maxLength: must be an integer from 0 to 4096`},
		{`{"type":"string","minLength":5000}`, `schema: /minLength: must be an integer from 0 to 4096`},
		{`{"type":"string","minLength":-1}`, `must be an integer`},
		{`{"type":"string","maxLength":2.5}`, `must be an integer`},
		{`{"type":"string","maxLength":"3"}`, `must be an integer`},
		{`{"type":"string","minLength":3,"maxLength":2}`, `schema: /maxLength: less than minLength`},
		{`{"allOf":[{"type":"string"},{"maxLength":3}]}`, `schema: /allOf: only a list of one schema is supported`},
		{`{"allOf":{"type":"string"}}`, `schema: /allOf: only a list of one schema`},
		{`{"allOf":[{"type":"string"}],"type":"string"}`, `"type" alongside "allOf" is not supported`},
		{`{"not":{}}`, `"not" is not supported`},
		{`{"if":{},"then":{}}`, `"if" is not supported`},
		{`{"type":"array","uniqueItems":true}`, `"uniqueItems" is not supported`},
		{`{"type":"array","prefixItems":[]}`, `/prefixItems: must be a non-empty array of schemas`},
		{`{"type":"array","prefixItems":{"type":"integer"}}`, `/prefixItems: must be a non-empty array of schemas`},
		{`{"type":"string","prefixItems":[{"type":"integer"}]}`, `array keywords for a type that is not "array"`},
		{`{"type":"array","prefixItems":[{"type":"integer"}],"items":false,"minItems":2}`, `minItems 2 is more than the 1 items`},
		{`{"type":"array","prefixItems":[{"type":"integer","foo":1}]}`, `/prefixItems/0: "foo" is not supported`},
		{`{"type":"object","patternProperties":{}}`, `"patternProperties" is not supported`},
		{`{"type":"array","items":[{"type":"string"}]}`, `schema: /items: a list of item schemas is not supported`},
		{`{"anyOf":[{"type":"string"},{"enum":["a"]}]}`, `schema: (root): alternatives 0 and 1 can both start with a string`},
		{`{"type":"object","properties":{"x":{"oneOf":[{"type":"object"},{"type":"null"},{"type":"object","properties":{}}]}}}`,
			`schema: /properties/x: alternatives 0 and 2 can both start with an object`},
		{`{"anyOf":[{"type":"integer"},{"type":"number"}]}`, `can both start with a number`},
		{`{"anyOf":[{"type":"object","properties":{"k":{"const":"a"}},"required":["k"]},{"type":"object","properties":{"k":{"enum":["b","a"]}},"required":["k"]}]}`,
			`schema: (root): alternatives 0 and 1 can both have "k" "a"`},
		{`{"anyOf":[{"type":"object","properties":{"k":{"type":"string"}},"required":["k"]},{"type":"object","properties":{"k":{"const":"b"}},"required":["k"]}]}`,
			`alternatives 0 and 1 both begin with "k": its value must be a "const" or "enum" in each`},
		{`{"anyOf":[{"type":"object","properties":{"a":{"type":"string"}}},{"type":"object","properties":{"b":{"type":"string"}},"required":["b"]}]}`,
			`alternatives 0 and 1 can both start with an object: objects among alternatives must each begin with a required property`},
		{`{"anyOf":[{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"string"}},"required":["b"]},{"type":"object"}]}`,
			`alternatives 0 and 2 can both start with an object`},
		{`{"anyOf":[{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"string"}},"required":["b"]},{"const":{"a":"x"}}]}`,
			`can both start with an object`},
		{`{"$ref":"#/$defs/nope"}`, `schema: /$ref: "#/$defs/nope" is not defined`},
		{`{"$ref":"http://example.com/s.json"}`, `schema: /$ref: only "#"`},
		{`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, `cycle`},
		{`{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}`, `contains itself`},
		{`{"$ref":"#/$defs/a","type":"object"}`, `"type" alongside "$ref"`},
		{`{"type":"object","properties":{"a":{"$defs":{}}}}`, `schema: /properties/a: "$defs" is supported only at the root`},
		{`{"type":"object","additionalProperties":{"type":"string"}}`, `schema: /additionalProperties: only true or false`},
		{`{"type":"object","properties":{"a":{}},"required":["b"]}`, `schema: /required: "b" is not a property`},
		{`{"type":"str"}`, `schema: /type: unknown type "str"`},
		{`{"type":"string","enum":[1,2]}`, `schema: /enum: no value of the schema's type`},
		{`{"properties":{}}`, `"properties" without "type"`},
		{`{"type":"string","items":{}}`, `array keywords`},
		{`{"type":"array","minItems":3,"maxItems":2}`, `less than minItems`},
		{`{"type":"array","maxItems":1000}`, `schema: /maxItems: must be an integer from 0`},
		{`{"type":"array","minItems":1.5}`, `must be an integer`},
		{`false`, `the schema false`},
		{`{"type":"string"`, `schema: not JSON`},
		{`{"type":"string"} {}`, `text after`},
		{`{"type":"string","type":"null"}`, `duplicate key "type"`},
		{`{"type":"object","properties":{"a":{"type":"string","nullable":true}}}`, `schema: /properties/a: "nullable" is not supported`},
		{nested, `nested deeper than 32`},
		{many.String(), `more than 256 subschemas`},
		{bigEnum, `schema: /enum: more than 256 values`},
		{`"` + strings.Repeat("x", MaxSchemaBytes) + `"`, `longer than`},
		{`{"$defs":{"n":{"type":"object","properties":{"c":{"$ref":"#/$defs/n"}},"required":["c"]}},"$ref":"#/$defs/n"}`, `no value fits`},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			s := tc.schema
			if len(s) > 120 {
				s = s[:120] + "..."
			}
			t.Errorf("%s: error %v, want %q", s, err, tc.want)
		}
	}
}

// ---- an independent validator of the supported subset ----

func decodeNum(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// validJSONFor reports whether text is one JSON value valid against schema.
func validJSONFor(t testing.TB, schema, text string) bool {
	if !json.Valid([]byte(text)) {
		return false
	}
	sch, err := decodeNum(schema)
	if err != nil {
		t.Fatal(err)
	}
	v, err := decodeNum(text)
	if err != nil {
		return false
	}
	return validate(v, sch, sch)
}

func validate(v, sch, root any) bool {
	if b, ok := sch.(bool); ok {
		return b
	}
	sc := sch.(map[string]any)
	if r, ok := sc["$ref"].(string); ok {
		if r == "#" {
			return validate(v, root, root)
		}
		parts := strings.Split(strings.TrimPrefix(r, "#/"), "/")
		return validate(v, root.(map[string]any)[parts[0]].(map[string]any)[parts[1]], root)
	}
	if all, ok := sc["allOf"].([]any); ok {
		for _, a := range all {
			if !validate(v, a, root) {
				return false
			}
		}
	}
	if alts, ok := sc["anyOf"].([]any); ok {
		for _, a := range alts {
			if validate(v, a, root) {
				return true
			}
		}
		return false
	}
	if alts, ok := sc["oneOf"].([]any); ok {
		n := 0
		for _, a := range alts {
			if validate(v, a, root) {
				n++
			}
		}
		return n == 1
	}
	if c, ok := sc["const"]; ok && !reflect.DeepEqual(v, c) {
		return false
	}
	if e, ok := sc["enum"].([]any); ok {
		found := false
		for _, x := range e {
			found = found || reflect.DeepEqual(v, x)
		}
		if !found {
			return false
		}
	}
	if typ, ok := sc["type"]; ok {
		types, ok := typ.([]any)
		if !ok {
			types = []any{typ}
		}
		match := false
		for _, ty := range types {
			switch ty {
			case "object":
				_, ok = v.(map[string]any)
			case "array":
				_, ok = v.([]any)
			case "string":
				_, ok = v.(string)
			case "number":
				_, ok = v.(json.Number)
			case "integer":
				n, isNum := v.(json.Number)
				ok = isNum && !strings.ContainsAny(string(n), ".eE")
			case "boolean":
				_, ok = v.(bool)
			case "null":
				ok = v == nil
			}
			match = match || ok
		}
		if !match {
			return false
		}
	}
	if n, ok := v.(json.Number); ok && !inBounds(string(n), sc) {
		return false
	}
	if obj, ok := v.(map[string]any); ok {
		props, hasProps := sc["properties"].(map[string]any)
		if hasProps || sc["additionalProperties"] == false {
			for k := range obj {
				if _, ok := props[k]; !ok {
					return false
				}
			}
		}
		for k, p := range props {
			if x, ok := obj[k]; ok && !validate(x, p, root) {
				return false
			}
		}
		req, _ := sc["required"].([]any)
		for _, r := range req {
			if _, ok := obj[r.(string)]; !ok {
				return false
			}
		}
	}
	if str, ok := v.(string); ok {
		if f, ok := sc["format"].(string); ok && !validFormat(f, str) {
			return false
		}
		if p, ok := sc["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			return false
		}
		if n, ok := sc["minLength"].(json.Number); ok {
			if m, _ := n.Int64(); int64(utf8.RuneCountInString(str)) < m {
				return false
			}
		}
		if n, ok := sc["maxLength"].(json.Number); ok {
			if m, _ := n.Int64(); int64(utf8.RuneCountInString(str)) > m {
				return false
			}
		}
	}
	if arr, ok := v.([]any); ok {
		prefix, _ := sc["prefixItems"].([]any)
		for i, x := range arr {
			if i < len(prefix) {
				if !validate(x, prefix[i], root) {
					return false
				}
				continue
			}
			if it, ok := sc["items"]; ok {
				if it == false || !validate(x, it, root) {
					return false
				}
			}
		}
		if n, ok := sc["minItems"].(json.Number); ok {
			if m, _ := n.Int64(); int64(len(arr)) < m {
				return false
			}
		}
		if n, ok := sc["maxItems"].(json.Number); ok {
			if m, _ := n.Int64(); int64(len(arr)) > m {
				return false
			}
		}
	}
	return true
}

// ratOf is number text n's value; one whose exponent big.Rat refuses
// (1e999999999999999999999) is taken as ±10^±400, past every number
// the tests write.
func ratOf(n string) *big.Rat {
	if r, ok := new(big.Rat).SetString(n); ok {
		return r
	}
	mant, exp, _ := strings.Cut(strings.ToLower(n), "e")
	r, _ := new(big.Rat).SetString(mant)
	if r.Sign() == 0 {
		return r
	}
	p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(400), nil))
	if strings.HasPrefix(exp, "-") {
		p.Inv(p)
	}
	return p.Mul(p, big.NewRat(int64(r.Sign()), 1))
}

// inBounds reports whether number text n meets sc's "minimum",
// "maximum", "exclusiveMinimum" and "exclusiveMaximum" (numbers, or the
// draft-4 booleans that make "minimum" or "maximum" exclusive), compared
// exactly as rationals.
func inBounds(n string, sc map[string]any) bool {
	v, ok := new(big.Rat).SetString(n)
	if !ok {
		return false
	}
	for _, b := range []struct {
		kw, xkw string
		sign    int // v's comparison with the bound that fails
	}{{"minimum", "exclusiveMinimum", -1}, {"maximum", "exclusiveMaximum", 1}} {
		excl := sc[b.xkw] == true
		if m, ok := sc[b.kw].(json.Number); ok {
			r := ratOf(string(m))
			if c := v.Cmp(r); c == b.sign || c == 0 && excl {
				return false
			}
		}
		if m, ok := sc[b.xkw].(json.Number); ok {
			r := ratOf(string(m))
			if c := v.Cmp(r); c == b.sign || c == 0 {
				return false
			}
		}
	}
	if k, ok := sc["multipleOf"].(json.Number); ok {
		if q := new(big.Rat).Quo(v, ratOf(string(k))); !q.IsInt() {
			return false
		}
	}
	return true
}

var (
	reDate = regexp.MustCompile(`^(\d{4})-(\d{2})-(\d{2})$`)
	reTime = regexp.MustCompile(`^(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-](\d{2}):(\d{2}))$`)
	reUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// validFormat reports whether s is of format f (RFC 3339's date-time,
// full-date and full-time; a leap second 60 whatever the time).
func validFormat(f, s string) bool {
	atoi := func(x string) int { n, _ := strconv.Atoi(x); return n }
	date := func(s string) bool {
		m := reDate.FindStringSubmatch(s)
		if m == nil {
			return false
		}
		y, mo, d := atoi(m[1]), atoi(m[2]), atoi(m[3])
		// day 0 of the next month is the month's last
		return mo >= 1 && mo <= 12 && d >= 1 && d <= time.Date(y, time.Month(mo+1), 0, 0, 0, 0, 0, time.UTC).Day()
	}
	clock := func(s string) bool {
		m := reTime.FindStringSubmatch(s)
		if m == nil {
			return false
		}
		return atoi(m[1]) <= 23 && atoi(m[2]) <= 59 && atoi(m[3]) <= 60 &&
			(m[6] == "" || atoi(m[6]) <= 23 && atoi(m[7]) <= 59)
	}
	switch f {
	case "date":
		return date(s)
	case "time":
		return clock(s)
	case "date-time":
		return len(s) > 11 && (s[10] == 'T' || s[10] == 't') && date(s[:10]) && clock(s[11:])
	case "uuid":
		return reUUID.MatchString(s)
	case "ipv4", "ipv6":
		a, err := netip.ParseAddr(s)
		return err == nil && a.Zone() == "" && (f == "ipv4") == a.Is4()
	case "hostname":
		return validHostname(s)
	case "email":
		at := strings.LastIndexByte(s, '@')
		return at > 0 && reDotAtom.MatchString(s[:at]) && strings.Contains(s[at+1:], ".") && validHostname(s[at+1:])
	case "duration":
		return validDuration(s)
	}
	return false
}

var reDotAtom = regexp.MustCompile("^[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

// validHostname: RFC 1123 labels of 1 to 63 letters, digits and hyphens,
// not at either end, 253 characters at most.
func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validDuration: RFC 3339 appendix A, read as a sequence of number-unit
// parts: the date's (Y, M, D) and the time's (H, M, S) each contiguous,
// in order, at least one part, or weeks alone.
func validDuration(s string) bool {
	if !strings.HasPrefix(s, "P") || len(s) < 3 {
		return false
	}
	date, clock, hasT := strings.Cut(s[1:], "T")
	if hasT && clock == "" {
		return false
	}
	parts := func(s, units string) (string, bool) { // the units present, in order
		var got []byte
		for s != "" {
			i := 0
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
			if i == 0 || i == len(s) {
				return "", false
			}
			got = append(got, s[i])
			s = s[i+1:]
		}
		return string(got), strings.Contains(units, string(got))
	}
	if w, ok := parts(date, "W"); ok && w == "W" && !hasT {
		return true
	}
	d, ok1 := parts(date, "YMD")
	t, ok2 := parts(clock, "HMS")
	return ok1 && ok2 && d+t != ""
}

// ---- a generator of valid documents from a compiled schema ----

type gen struct {
	r   *rand.Rand
	cs  *compiled
	buf bytes.Buffer
}

func (g *gen) ws() {
	switch g.r.IntN(8) {
	case 0:
		g.buf.WriteString(" ")
	case 1:
		g.buf.WriteString("\n  ")
	case 2:
		g.buf.WriteString(strings.Repeat(" ", 1+g.r.IntN(MaxSpace)))
	}
}

var genStrings = []string{``, `a`, `hello world`, `é中😀`, `\"`, `\\`, `\n\t`, `\u00e9`, `\ud83d\ude00`, `/`, `\/`, `{}[],:`, `<b>&`}

func (g *gen) str() {
	g.buf.WriteByte('"')
	for range g.r.IntN(4) {
		g.buf.WriteString(genStrings[g.r.IntN(len(genStrings))])
	}
	g.buf.WriteByte('"')
}

// genChars are one character each (lone surrogates too, when a low one
// does not follow a high one).
var genChars = []string{`a`, ` `, `é`, `中`, `😀`, `\"`, `\\`, `\n`, `\/`, `\u00e9`, `\u00E9`, `\ud83d\ude00`, `\uD83D\uDE00`, `\ud800`, `\udc00`, `\uDBFF`}

// strLen writes a string of n characters.
func (g *gen) strLen(n int) {
	g.buf.WriteByte('"')
	prev := ""
	for i := 0; i < n; {
		c := genChars[g.r.IntN(len(genChars))]
		if (prev == `\ud800` || prev == `\uDBFF`) && strings.HasPrefix(strings.ToLower(c), `\udc`) {
			continue // the two would be one character
		}
		g.buf.WriteString(c)
		prev = c
		i++
	}
	g.buf.WriteByte('"')
}

// patterned writes a random string that automaton d accepts: a walk that
// heads for an accepting state once it has gone some way.
func (g *gen) patterned(d *dfa) {
	dist := patternDistances(d)
	g.buf.WriteByte('"')
	st := d.start
	for step := 0; ; step++ {
		if d.accept[st] && (step >= 20 || g.r.IntN(4) == 0) {
			break
		}
		var next []byte
		for b := range 256 {
			if t := d.step(st, byte(b)); t >= 0 && (step < 20 || dist[t] < dist[st]) {
				next = append(next, byte(b))
			}
		}
		if len(next) == 0 { // an accepting state with nothing after it
			break
		}
		b := next[g.r.IntN(len(next))]
		switch {
		case b == '"' || b == '\\':
			g.buf.WriteByte('\\')
			g.buf.WriteByte(b)
		case b < 0x20:
			g.buf.WriteString(map[byte]string{'\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}[b])
		default:
			g.buf.WriteByte(b)
		}
		st = uint16(d.step(st, b))
	}
	g.buf.WriteByte('"')
}

// patternDistances are the fewest bytes from each state to an accepting one.
func patternDistances(d *dfa) []int {
	dist := make([]int, len(d.accept))
	for s := range dist {
		dist[s] = 1 << 30
		if d.accept[s] {
			dist[s] = 0
		}
	}
	for changed := true; changed; {
		changed = false
		for s := range dist {
			for b := range 256 {
				if t := d.step(uint16(s), byte(b)); t >= 0 && dist[t]+1 < dist[s] {
					dist[s], changed = dist[t]+1, true
				}
			}
		}
	}
	return dist
}

// formatted writes a random string of format f.
func (g *gen) formatted(f uint8) {
	r := g.r
	pick := func(s string) byte { return s[r.IntN(len(s))] }
	date := func() {
		y, m := r.IntN(10000), 1+r.IntN(12)
		if r.IntN(4) == 0 {
			y, m = []int{0, 1900, 2000, 2023, 2024}[r.IntN(5)], 2
		}
		last := time.Date(y, time.Month(m+1), 0, 0, 0, 0, 0, time.UTC).Day()
		d := 1 + r.IntN(last)
		if r.IntN(3) == 0 {
			d = last
		}
		fmt.Fprintf(&g.buf, "%04d-%02d-%02d", y, m, d)
	}
	clock := func() {
		fmt.Fprintf(&g.buf, "%02d:%02d:%02d", r.IntN(24), r.IntN(60), r.IntN(61))
		if r.IntN(2) == 0 {
			g.buf.WriteByte('.')
			for range 1 + r.IntN(9) {
				g.buf.WriteByte(pick("0123456789"))
			}
		}
		if r.IntN(3) == 0 {
			g.buf.WriteByte(pick("Zz"))
		} else {
			fmt.Fprintf(&g.buf, "%c%02d:%02d", pick("+-"), r.IntN(24), r.IntN(60))
		}
	}
	g.buf.WriteByte('"')
	switch f {
	case fDateTime:
		date()
		g.buf.WriteByte(pick("Tt"))
		clock()
	case fDate:
		date()
	case fTime:
		clock()
	case fUUID:
		for i := range 36 {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				g.buf.WriteByte('-')
			} else {
				g.buf.WriteByte(pick("0123456789abcdefABCDEF"))
			}
		}
	}
	g.buf.WriteByte('"')
}

var genNumbers = []string{`0`, `-0`, `7`, `-12`, `1234567890`, `0.5`, `-3.25`, `1e9`, `2E-3`, `-0.0e+0`, `10.01E10`}

func (g *gen) num(integer bool) {
	for {
		n := genNumbers[g.r.IntN(len(genNumbers))]
		if !integer || !strings.ContainsAny(n, ".eE") {
			g.buf.WriteString(n)
			return
		}
	}
}

// bounded writes a number in range r (an integer for an integer's node):
// one of the range's ends, or one near an end, or any between.
func (g *gen) bounded(r *numRange, integer bool) {
	var signs []int
	for s := range 2 {
		if !r.none[s] {
			signs = append(signs, s)
		}
	}
	s := signs[g.r.IntN(len(signs))]
	lo, hi := r.lo[s], r.hi[s]
	v := lo
	switch g.r.IntN(5) {
	case 0:
	case 1:
		v = hi
	default:
		span := hi.i - lo.i + 1
		if g.r.IntN(2) == 0 {
			span = min(span, 10)
		}
		v.i = lo.i + g.r.Uint64N(span)
		if g.r.IntN(2) == 0 {
			v.i = hi.i - g.r.Uint64N(span)
		}
		if !integer {
			v.f = g.r.Uint64N(fracOne)
			v.f -= v.f % pow10[g.r.IntN(MaxBoundDigits+1)]
		}
		if v.le(lo) {
			v = lo
		}
		if hi.le(v) {
			v = hi
		}
		if k := r.mult; k != 0 { // the ends are multiples
			v.i = max(v.i-v.i%k, lo.i)
		}
	}
	if s == 1 {
		g.buf.WriteByte('-')
	}
	fmt.Fprint(&g.buf, v.i)
	if !integer && (v.f != 0 || g.r.IntN(4) == 0) {
		frac := strings.TrimRight(fmt.Sprintf("%018d", v.f), "0")
		if frac == "" || len(frac) < MaxBoundDigits && g.r.IntN(4) == 0 {
			frac += "0"
		}
		g.buf.WriteString("." + frac)
	}
}

func (g *gen) anyValue(depth int) {
	k := g.r.IntN(8)
	if depth >= 4 {
		k = 2 + g.r.IntN(6)
	}
	switch k {
	case 0:
		g.buf.WriteByte('{')
		for i := range g.r.IntN(3) {
			if i > 0 {
				g.buf.WriteByte(',')
			}
			g.ws()
			g.str()
			g.ws()
			g.buf.WriteByte(':')
			g.ws()
			g.anyValue(depth + 1)
			g.ws()
		}
		g.buf.WriteByte('}')
	case 1:
		g.buf.WriteByte('[')
		for i := range g.r.IntN(3) {
			if i > 0 {
				g.buf.WriteByte(',')
			}
			g.ws()
			g.anyValue(depth + 1)
			g.ws()
		}
		g.buf.WriteByte(']')
	case 2, 3:
		g.str()
	case 4, 5:
		g.num(false)
	default:
		g.buf.WriteString([]string{"true", "false", "null"}[g.r.IntN(3)])
	}
}

func (g *gen) value(n uint16, depth int) {
	nd := &g.cs.nodes[n]
	switch nd.kind {
	case kAny:
		g.anyValue(depth)
		return
	case kEnum:
		g.buf.Write(nd.enum[g.r.IntN(len(nd.enum))])
		return
	case kAnyOf:
		g.value(nd.alts[g.r.IntN(len(nd.alts))], depth)
		return
	}
	var types []uint8
	for t := tObject; t <= tNull; t <<= 1 {
		if nd.types&t != 0 {
			types = append(types, t)
		}
	}
	t := types[g.r.IntN(len(types))]
	switch t {
	case tObject:
		if nd.anyObject {
			g.buf.WriteString(`{"k":`)
			g.anyValue(depth + 1)
			g.buf.WriteString(`}`)
			return
		}
		g.buf.WriteByte('{')
		first := true
		for _, p := range nd.props {
			if !p.required && (depth > 3 || g.r.IntN(2) == 0) {
				continue
			}
			if !first {
				g.buf.WriteByte(',')
			}
			first = false
			g.ws()
			g.buf.Write(p.key)
			g.ws()
			g.buf.WriteByte(':')
			g.ws()
			g.value(p.node, depth+1)
			g.ws()
		}
		g.buf.WriteByte('}')
	case tArray:
		count := nd.minItems
		if depth <= 3 {
			hi := nd.maxItems
			if hi < 0 {
				hi = nd.minItems + 3
			}
			count += g.r.IntN(hi - nd.minItems + 1)
		}
		g.buf.WriteByte('[')
		for i := range count {
			if i > 0 {
				g.buf.WriteByte(',')
			}
			g.ws()
			if i < len(nd.prefix) {
				g.value(nd.prefix[i], depth+1)
			} else {
				g.value(nd.items, depth+1)
			}
			g.ws()
		}
		g.buf.WriteByte(']')
	case tString:
		switch {
		case nd.pat != nil:
			g.patterned(nd.pat)
		case nd.format != fNone:
			g.formatted(nd.format)
		case nd.minLen > 0 || nd.maxLen >= 0:
			hi := nd.maxLen
			if hi < 0 {
				hi = nd.minLen + 4
			}
			g.strLen(nd.minLen + g.r.IntN(hi-nd.minLen+1))
		default:
			g.str()
		}
	case tNumber, tInteger:
		if nd.num != nil {
			g.bounded(nd.num, nd.types&tNumber == 0)
		} else {
			g.num(t == tInteger)
		}
	case tBoolean:
		g.buf.WriteString([]string{"true", "false"}[g.r.IntN(2)])
	case tNull:
		g.buf.WriteString("null")
	}
}

// TestSchema_Generated: random documents valid against a schema are
// taken byte by byte, done at their end and not before (but for a number
// at the top, done wherever it could end); and a state inside a free
// string keeps its key through plain text.
func TestSchema_Generated(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range schemaCases {
		start, err := CompileSchema([]byte(tc.schema))
		if err != nil {
			t.Fatal(err)
		}
		g := &gen{r: r, cs: start.c}
		for range 300 {
			g.buf.Reset()
			g.value(start.c.root, 0)
			doc := g.buf.String()
			if !validJSONFor(t, tc.schema, doc) {
				t.Fatalf("%s\n  generated %q: the validator refuses it", tc.schema, doc)
			}
			st := start
			for i := 0; i < len(doc); i++ {
				if st.Done() && !validJSONFor(t, tc.schema, doc[:i]) {
					t.Fatalf("%s\n  %q: done after %d bytes", tc.schema, doc, i)
				}
				if st.Plain() {
					p := st
					for _, c := range []byte("plain é中😀 text") {
						if !p.Feed(c) {
							t.Fatalf("%q: plain text refused after %d bytes", doc, i)
						}
					}
					if !bytes.Equal(p.Key(nil), st.Key(nil)) {
						t.Fatalf("%q: plain text changed the state after %d bytes", doc, i)
					}
				}
				if !st.Feed(doc[i]) {
					t.Fatalf("%s\n  %q: byte %d refused", tc.schema, doc, i)
				}
			}
			if !st.Done() {
				t.Fatalf("%s\n  %q: not done at the end", tc.schema, doc)
			}
		}
	}
}

// fuzzSchemas are the schemas FuzzSchema reads texts against.
// tupleSchema: tuples (prefixItems), one open-ended and nested.
const tupleSchema = `{"type":"object","properties":{"t":{"type":"array","prefixItems":[{"type":"integer"},{"type":"array","prefixItems":[{"type":"string","maxLength":2},{"type":"boolean"}],"items":false}],"items":{"enum":["a","b"]},"minItems":1,"maxItems":5}},"required":["t"]}`

var fuzzSchemas = []string{personSchema, treeSchema, shapeSchema, anySchema, prefixSchema, enumSchema, constSchema, rootRefSchema, formatSchema, dateTimeSchema, lengthSchema, patternSchema, boundsSchema, tightSchema, unionSchema, tupleSchema}

const probes = "{}[],:\"0123.eE-+tfn \\u\xc3\xa9" + "69TZdc"

func FuzzSchema(f *testing.F) {
	for _, tc := range schemaCases {
		for i, fs := range fuzzSchemas {
			if fs == tc.schema {
				for _, s := range append(tc.accept, tc.refuse...) {
					f.Add(uint8(i), s)
				}
			}
		}
	}
	starts := make([]Schema, len(fuzzSchemas))
	for i, s := range fuzzSchemas {
		var err error
		if starts[i], err = CompileSchema([]byte(s)); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, s string) {
		i := int(which) % len(fuzzSchemas)
		st, fed := feedKeyed[Schema](t, starts[i], s, probes)
		if fed && st.Done() && !validJSONFor(t, fuzzSchemas[i], s) {
			t.Fatalf("%s\n  %q: accepted, yet not valid against the schema", fuzzSchemas[i], s)
		}
	})
}

// feedKeyed feeds s to a copy of start, checking at every state on the
// way that states with one key take the same probe bytes and are done
// alike; it returns the state reached and whether every byte was taken.
func feedKeyed[S any, P interface {
	*S
	Machine
}](t *testing.T, start S, s, probes string) (S, bool) {
	t.Helper()
	return feedKeyedBy[S, P](t, start, s, probes, func(st *S, c byte) bool { return P(st).Feed(c) }, nil)
}

// feedKeyedBy is feedKeyed with s's bytes fed by feed and, where more is
// not nil, more of a state's behaviour (bits 32 to 62) besides the probes.
func feedKeyedBy[S any, P interface {
	*S
	Machine
}](t *testing.T, start S, s, probes string, feed func(*S, byte) bool, more func(S) uint64) (S, bool) {
	t.Helper()
	st := start
	seen := map[string]uint64{}
	for j := 0; j <= len(s); j++ {
		var took uint64
		for k := 0; k < len(probes); k++ {
			if p := st; P(&p).Feed(probes[k]) {
				took |= 1 << k
			}
		}
		if more != nil {
			took |= more(st)
		}
		if P(&st).Done() {
			took |= 1 << 63
		}
		key := string(P(&st).Key(nil))
		if prev, ok := seen[key]; ok && prev != took {
			t.Fatalf("%q: after %d bytes a state's key was seen with other behaviour", s, j)
		}
		seen[key] = took
		if j == len(s) {
			break
		}
		if !feed(&st, s[j]) {
			return st, false
		}
	}
	return st, true
}

// TestSchema_NoDeadEnds: along random byte walks that dive deep, every
// state the machine reaches takes some byte or is done (a masked
// generation never finds itself with no token to take), the nesting
// limit included.
func TestSchema_NoDeadEnds(t *testing.T) {
	schemas := append([]string{
		`{"$defs":{"n":{"type":"object","properties":{"c":{"type":"array","minItems":1,"items":{"$ref":"#/$defs/n"}},
			"d":{"$ref":"#/$defs/n"},"e":{"type":"object","properties":{"f":{"type":"object","properties":{"g":{"type":"integer"}},"required":["g"]}},"required":["f"]}},"required":[]}},
			"$ref":"#/$defs/n"}`,
		`{"$defs":{"l":{"type":"array","items":{"anyOf":[{"$ref":"#/$defs/l"},{"type":"object","properties":{"x":{"$ref":"#/$defs/l"},"y":{"type":"array","minItems":1,"items":{"type":"array","minItems":1,"items":{}}}}}]}}},"$ref":"#/$defs/l"}`,
	}, fuzzSchemas...)
	r := rand.New(rand.NewPCG(3, 4))
	deepest, done := 0, 0
	defer func() { t.Logf("states at the depth limit: %d; walks done: %d", deepest, done) }()
	for _, schema := range schemas {
		start, err := CompileSchema([]byte(schema))
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			st, out := start, []byte{}
			for step := 0; step < 3000 && !st.Done(); step++ {
				if st.depth == MaxSchemaDepth {
					deepest++
				}
				b, ok := pickByte[Schema](r, &st, func(b byte) int { return byteWeight(b, step) })
				if !ok {
					t.Fatalf("%s\n  dead end after %q", schema, out)
				}
				out = append(out, b)
			}
			if st.Done() {
				done++
			}
			if st.Done() && !validJSONFor(t, schema, string(out)) {
				t.Fatalf("%s\n  %q: done, yet not valid", schema, out)
			}
		}
	}
}

// pickByte draws one of the bytes state st takes, each as likely as its
// weight, and feeds it; ok false: st takes none.
func pickByte[S any, P interface {
	*S
	Machine
}](r *rand.Rand, st *S, weight func(byte) int) (b byte, ok bool) {
	var took []byte
	total := 0
	for b := range 256 {
		if p := *st; P(&p).Feed(byte(b)) {
			took = append(took, byte(b))
			total += weight(byte(b))
		}
	}
	if len(took) == 0 {
		return 0, false
	}
	w := r.IntN(total)
	for _, b := range took {
		if w -= weight(b); w < 0 {
			P(st).Feed(b)
			return b, true
		}
	}
	panic("unreachable")
}

// byteWeight steers a walk: into containers first, out of them later.
func byteWeight(b byte, step int) int {
	switch b {
	case '{', '[', '"', ':', ',':
		if step < 1500 {
			return 200
		}
		return 5
	case '}', ']':
		if step < 1500 {
			return 5
		}
		return 400
	}
	return 1
}
