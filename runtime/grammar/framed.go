package grammar

// Framed is a Schema's value between two fixed texts: a tool call in
// Hermes' form, "<tool_call>\n" + {"name": …, "arguments": …} +
// "\n</tool_call>". A value type, as Schema is.
type Framed struct {
	pre, post string
	phase     uint8  // 0: in pre, 1: in the value, 2: in post
	at        uint16 // bytes of pre or post read
	inner     Schema
}

// Frame returns the start state of inner's value between pre and post.
func Frame(pre string, inner Schema, post string) Framed {
	f := Framed{pre: pre, post: post, inner: inner}
	if pre == "" {
		f.phase = 1
	}
	return f
}

// Feed reads one byte (Machine).
func (f *Framed) Feed(b byte) bool {
	switch f.phase {
	case 0:
		if b != f.pre[f.at] {
			return false
		}
		if f.at++; int(f.at) == len(f.pre) {
			f.phase, f.at = 1, 0
		}
		return true
	case 1:
		if !f.inner.Done() {
			return f.inner.Feed(b)
		}
		// a done value may go on (a number's digits) or end here
		if in := f.inner; in.Feed(b) {
			f.inner = in
			return true
		}
		if f.post == "" {
			return false
		}
		f.phase = 2
		fallthrough
	default:
		if int(f.at) == len(f.post) || b != f.post[f.at] {
			return false
		}
		f.at++
		return true
	}
}

// Done reports whether the value and the closing text are whole (Machine).
func (f *Framed) Done() bool {
	if f.phase == 1 {
		return f.post == "" && f.inner.Done()
	}
	return f.phase == 2 && int(f.at) == len(f.post)
}

// Key identifies the state (Machine); the texts are the Masker's to know.
func (f *Framed) Key(dst []byte) []byte {
	dst = append(dst, f.phase, byte(f.at), byte(f.at>>8))
	if f.phase == 1 {
		dst = f.inner.Key(dst)
	}
	return dst
}

// Plain reports whether the value is inside a free string (Machine).
func (f *Framed) Plain() bool { return f.phase == 1 && f.inner.Plain() }
