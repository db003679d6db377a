package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/nozzle-ai/nozzle"
)

func errTooLarge(limit int64) error {
	return nozzle.Errorf(nozzle.ETOOLARGE, "The request body is too large: the limit is %d bytes.", limit).WithReason("request_too_large")
}

// readBody reads the request body, at most limit bytes. The server streams
// request bodies (fiber's StreamRequestBody), so every route enforces its
// own limit here rather than relying on one global BodyLimit.
func (s *Server) readBody(c *fiber.Ctx, limit int64) ([]byte, error) {
	h := &c.Request().Header
	if err := refuseEncoded(h); err != nil {
		return nil, err
	}
	cl := h.ContentLength()
	if int64(cl) > limit {
		return nil, errTooLarge(limit)
	}
	stream := c.Context().RequestBodyStream()
	if cl >= 0 || stream == nil {
		// A known length within the limit: fasthttp reads exactly that.
		b := c.Request().Body()
		if st := stateOf(c); st != nil {
			st.bodyConsumed = true
		}
		if int64(len(b)) > limit {
			return nil, errTooLarge(limit)
		}
		return b, nil
	}
	// Chunked: read one byte past the limit to tell.
	b, err := io.ReadAll(io.LimitReader(stream, limit+1))
	if err != nil {
		return nil, nozzle.Errorf(nozzle.EINVALID, "Could not read the request body.").Wrap(err)
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge(limit)
	}
	if st := stateOf(c); st != nil {
		st.bodyConsumed = true
	}
	return b, nil
}

// refuseEncoded refuses a request body in a content coding (gzip, br):
// bodies are read as sent, so one compressed would be misread.
func refuseEncoded(h *fasthttp.RequestHeader) error {
	if enc := h.Peek(fiber.HeaderContentEncoding); len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
		return nozzle.Errorf(nozzle.EINVALID, "Compressed request bodies are not supported.")
	}
	return nil
}

// readJSON reads a JSON body within Config.BodyLimit into v. An empty body
// leaves v as it is when allowEmpty.
func (s *Server) readJSON(c *fiber.Ctx, v any, allowEmpty bool) error {
	b, err := s.readBody(c, int64(s.cfg.BodyLimit))
	if err != nil {
		return err
	}
	if allowEmpty && len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return decodeStrict(b, v)
}

// decodeStrict decodes the JSON object b into v as decodeJSON does, and
// refuses a field v does not define, as OpenAI's API refuses an argument
// it does not know (nested objects whose types decode themselves, such as
// chat messages, are lenient), a member of another spelling or given
// twice (checkKeys), and data after the object.
func decodeStrict(b []byte, v any) error {
	// Members are known by their exact names, and named once (checkKeys).
	b, err := checkKeys(b, shapeFor(v))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// A field's own refusal (too many messages), already OpenAI-shaped.
		var ne *nozzle.Error
		if errors.As(err, &ne) {
			return err
		}
		if f, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
			field := strings.TrimSuffix(f, `"`)
			return invalid(field, "Unrecognized request argument supplied: %s", field)
		}
		return decodeJSON(b, v)
	}
	// (Decoder.More does not see a stray ] or } after the object.)
	if len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) > 0 {
		return nozzle.Errorf(nozzle.EINVALID, "We could not parse the JSON body of your request: data after the JSON object.")
	}
	return nil
}

// writeList answers with an OpenAI list: {"object": "list", "data": [...]}.
func writeList[T any](c *fiber.Ctx, data []T) error {
	if data == nil {
		data = []T{}
	}
	return c.JSON(fiber.Map{"object": "list", "data": data})
}
