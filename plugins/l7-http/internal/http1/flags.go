package http1

// Flags name ambiguities in a message that the parser noticed and did not resolve by guessing.
// All but FlagMultipleHost leave the message's framing (where it ends) uncertain, so such a
// message is also reported partial and its side of the connection waits for the next message
// boundary instead of guessing one.
type Flags uint16

// The flags. Their names are part of the record schema (sdk.L7.Flags).
const (
	// FlagCLAndChunked: both Transfer-Encoding and Content-Length. RFC 9112 lets
	// Transfer-Encoding win, but a proxy that picks the other one sees a different message
	// boundary; that disagreement is how requests are smuggled.
	FlagCLAndChunked Flags = 1 << iota
	// FlagBareLFChunkSize: a chunk-size line ended by LF alone.
	FlagBareLFChunkSize
	// FlagBareLFChunkEnd: chunk data followed by LF alone instead of CRLF.
	FlagBareLFChunkEnd
	// FlagConflictingCL: Content-Length values that differ.
	FlagConflictingCL
	// FlagInvalidCL: a Content-Length that is not a decimal number.
	FlagInvalidCL
	// FlagInvalidTE: a request's Transfer-Encoding that does not end in chunked, or chunked twice.
	FlagInvalidTE
	// FlagObsFoldFraming: a Content-Length or Transfer-Encoding continued on the next line.
	FlagObsFoldFraming
	// FlagMultipleHost: more than one Host header (the first is reported).
	FlagMultipleHost

	flagCount = iota
)

var flagNames = [flagCount]string{
	"content_length_and_chunked",
	"bare_lf_in_chunk_size",
	"bare_lf_after_chunk_data",
	"conflicting_content_length",
	"invalid_content_length",
	"invalid_transfer_encoding",
	"obs_fold_in_framing_header",
	"multiple_host",
}

// Names lists the flags set, in bit order; nil when none is.
func (f Flags) Names() []string {
	if f == 0 {
		return nil
	}
	var out []string
	for i := 0; i < flagCount; i++ {
		if f&(1<<i) != 0 {
			out = append(out, flagNames[i])
		}
	}
	return out
}

// framing is the subset of flags that leave a message's end unknown; FlagMultipleHost does not.
const framing = FlagCLAndChunked | FlagBareLFChunkSize | FlagBareLFChunkEnd | FlagConflictingCL |
	FlagInvalidCL | FlagInvalidTE | FlagObsFoldFraming
