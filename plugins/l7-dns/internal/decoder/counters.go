package decoder

import "sync/atomic"

// counter names one of the decoder's cumulative counters. Every sample, message or query that
// is dropped, skipped or reported incompletely is counted under a name that says why.
type counter int

const (
	cSamples        counter = iota // samples received
	cFlowEnds                      // FlowEnd samples received
	cRecords                       // L7 records produced
	cRecordsPartial                // of which Partial
	cRecordsError                  // of which with Error (a malformed message)
	cRecordsLost                   // produced but not delivered: held at Shutdown

	cSkipTransport // sample of a transport other than UDP or TCP
	cSkipEmpty     // sample with no payload and no FlowEnd
	cSkipShort     // message shorter than a DNS header: nothing to report

	cFlowsEvicted // flows ended early because the table was full

	cQueriesTimeout     // reported without a response: waited longer than query_timeout
	cQueriesFlowEnd     // reported without a response: the flow ended
	cQueriesEvicted     // reported without a response: the flow was evicted
	cQueriesPendingFull // reported without a response: max_pending newer queries in the flow
	cQueriesDuplicate   // a query repeated (same ID and question) while the first waited
	cQueriesShutdown    // still waiting at Shutdown: never reported

	cResponsesUnmatched // response with no waiting query: reported alone, Partial
	cAnswersCut         // answers past max_answers, not reported

	cMsgTruncated // message whose data ended before its counts (cut, fragment, or malformed)
	cMsgMalformed // message with a fault (pointer loop, bad label, bad record data)

	cTCPRetransSegments // segments wholly retransmitted: skipped
	cTCPRetransBytes    // retransmitted bytes skipped
	cTCPGaps            // sequence gaps (segments not captured)
	cTCPMissingBytes    // stream bytes not seen: gaps and the cut tails of samples
	cTCPDesync          // message boundary lost: waiting for a plausible message start
	cTCPResyncSkipped   // samples skipped while looking for a message start
	cTCPBadLength       // length prefix shorter than a DNS header: boundary lost
	cTCPMessagesLost    // messages of which not even the length was seen
	cTCPBufferCut       // messages longer than the buffering bounds: reported from a prefix

	numCounters
)

var counterNames = [numCounters]string{
	cSamples:        "samples",
	cFlowEnds:       "samples.flow_end",
	cRecords:        "records",
	cRecordsPartial: "records.partial",
	cRecordsError:   "records.error",
	cRecordsLost:    "records.lost_at_shutdown",

	cSkipTransport: "skip.transport",
	cSkipEmpty:     "skip.empty_sample",
	cSkipShort:     "skip.short_message",

	cFlowsEvicted: "flows.evicted",

	cQueriesTimeout:     "queries.timeout",
	cQueriesFlowEnd:     "queries.flow_end",
	cQueriesEvicted:     "queries.evicted",
	cQueriesPendingFull: "queries.pending_full",
	cQueriesDuplicate:   "queries.duplicate",
	cQueriesShutdown:    "queries.lost_at_shutdown",

	cResponsesUnmatched: "responses.unmatched",
	cAnswersCut:         "answers.cut",

	cMsgTruncated: "messages.truncated",
	cMsgMalformed: "messages.malformed",

	cTCPRetransSegments: "tcp.retransmitted_segments",
	cTCPRetransBytes:    "tcp.retransmitted_bytes",
	cTCPGaps:            "tcp.gaps",
	cTCPMissingBytes:    "tcp.missing_bytes",
	cTCPDesync:          "tcp.desync",
	cTCPResyncSkipped:   "tcp.resync_skipped_samples",
	cTCPBadLength:       "tcp.bad_length",
	cTCPMessagesLost:    "tcp.messages_lost",
	cTCPBufferCut:       "tcp.buffer_cut",
}

// lossCounters are the ones that mean the decoder is losing something because of its own
// bounds, which a larger setting would avoid: Health reports degraded while they grow.
var lossCounters = []counter{cFlowsEvicted, cQueriesPendingFull, cTCPBufferCut}

// counters are atomic so that Health reads them without waiting for a Decode in progress.
type counters [numCounters]atomic.Uint64

func (c *counters) inc(k counter) { c[k].Add(1) }

func (c *counters) add(k counter, n int) {
	if n > 0 {
		c[k].Add(uint64(n))
	}
}
