// Package api defines the resources mix stores besides subscriptions — the application catalog,
// alert rules, prediction settings and alert receivers — as both mix and analysis read them.
//
// Every resource follows the conventions of sdk.Subscription:
//
//  1. Parse… reads JSON, rejects unknown fields and bad values, and returns the normalised value
//     (CIDRs canonical, IPv4-mapped addresses unmapped, port lists sorted and merged, names in
//     their canonical case, durations as time.Duration). A set parser (ParseCatalog, ParseRules,
//     ParseReceivers) reads one object, a JSON array of them, or {"<plural>": […]}.
//  2. MarshalJSON writes the normalised form, which Parse… reads back to an equal value.
//  3. Validate checks a value built in code by writing it out and reading it back, so there is
//     one set of rules.
//  4. Every rejection is a *sdk.ValidationError listing each bad field with its JSON path from
//     the document's root ("match[1].ports[0]", "[2].selector.cidr", "owner.contact") and the
//     reason, so a user can fix them all at once.
//
// Limits are constants; a document over a limit is rejected, never truncated.
package api
