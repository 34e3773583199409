package sdk

import (
	"fmt"
	"strings"
)

// FieldError is one rejected value: the path of the field (as a JSON path from the document's
// root, such as "spec.L4Range[1]") and the reason.
type FieldError struct {
	Path   string
	Reason string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// ValidationError carries every rejected field of one document, so a user fixes them all at once.
// Match it with errors.As.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid: " + strings.Join(parts, "; ")
}

// errs collects field errors under a path prefix.
type errs struct {
	fields []FieldError
}

func (e *errs) add(path, format string, args ...any) {
	e.fields = append(e.fields, FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// has reports whether an error about path was added since the first n.
func (e *errs) has(n int, path string) bool {
	for _, f := range e.fields[n:] {
		if f.Path == path {
			return true
		}
	}
	return false
}

func (e *errs) err() error {
	if len(e.fields) == 0 {
		return nil
	}
	return &ValidationError{Fields: e.fields}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	if field == "" {
		return prefix
	}
	return prefix + "." + field
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
