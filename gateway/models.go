package gateway

import (
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// modelJSON is an OpenAI model object; adapters name the base model as
// their parent.
type modelJSON struct {
	ID            string `json:"id"`
	Object        string `json:"object"`
	Created       int64  `json:"created"`
	OwnedBy       string `json:"owned_by"`
	Root          string `json:"root,omitempty"`
	Parent        string `json:"parent,omitempty"`
	ContextLength int    `json:"context_length,omitempty"`
}

func (s *Server) baseModel() modelJSON {
	info, ok := s.router.modelInfo()
	if !ok {
		return modelJSON{ID: nozzle.BaseModelAlias, Object: "model", OwnedBy: "nozzle"}
	}
	created := int64(0)
	if !info.CreatedAt.IsZero() {
		created = info.CreatedAt.Unix()
	}
	return modelJSON{ID: info.ID, Object: "model", Created: created, OwnedBy: "nozzle",
		Root: info.ID, ContextLength: info.ContextLength}
}

// named reports whether id names the base model m: its id, or "base".
func (m modelJSON) named(id string) bool { return id == m.ID || id == nozzle.BaseModelAlias }

func (s *Server) adapterModel(base modelJSON, a *nozzle.Adapter) modelJSON {
	return modelJSON{ID: a.Name, Object: "model", Created: a.CreatedAt.Unix(), OwnedBy: a.TenantID,
		Root: base.ID, Parent: base.ID, ContextLength: base.ContextLength}
}

// listModels handles GET /v1/models: the base model and the adapters of
// the caller's tenant.
func (s *Server) listModels(c *fiber.Ctx) error {
	p := principalFrom(c)
	list, err := s.deps.Adapters.Adapters(c.UserContext(), p.tenant.ID)
	if err != nil {
		return err
	}
	base := s.baseModel()
	out := make([]modelJSON, 0, len(list)+1)
	out = append(out, base)
	for _, a := range list {
		out = append(out, s.adapterModel(base, a))
	}
	return writeList(c, out)
}

// modelParam returns the {model} of the route: SDKs escape a "/" in a
// model id (org/name) as %2F.
func modelParam(c *fiber.Ctx) string {
	id, err := url.PathUnescape(c.Params("*"))
	if err != nil {
		id = strings.Clone(c.Params("*"))
	}
	return id
}

// getModel handles GET /v1/models/{model}.
func (s *Server) getModel(c *fiber.Ctx) error {
	p := principalFrom(c)
	id := modelParam(c)
	base := s.baseModel()
	if base.named(id) {
		return c.JSON(base)
	}
	if nozzle.ValidateAdapterName(id) != nil {
		return modelNotFound(id)
	}
	a, err := s.deps.Adapters.Adapter(c.UserContext(), p.tenant.ID, id)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return modelNotFound(id)
		}
		return err
	}
	return c.JSON(s.adapterModel(base, a))
}

// deleteModel handles DELETE /v1/models/{model}, as OpenAI's API deletes a
// fine-tuned model: the tenant's adapter of that name goes, as with DELETE
// /v1/adapters/{name}. The base model cannot be deleted.
func (s *Server) deleteModel(c *fiber.Ctx) error {
	p := principalFrom(c)
	id := modelParam(c)
	if base := s.baseModel(); base.named(id) {
		return nozzle.Errorf(nozzle.EFORBIDDEN, "The base model %q cannot be deleted; only your adapters can.", base.ID).WithParam("model")
	}
	if nozzle.ValidateAdapterName(id) != nil {
		return modelNotFound(id)
	}
	a, err := s.removeAdapter(c.UserContext(), p.tenant.ID, id)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return modelNotFound(id)
		}
		return err
	}
	return c.JSON(fiber.Map{"id": a.Name, "object": "model", "deleted": true})
}
