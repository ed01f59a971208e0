// Package fields holds the standard log field names the runner uses, plus the
// table that maps legacy field names to their standard replacements.
package fields

const (
	// HTTPStatusCode is the standard field for an HTTP response status code.
	HTTPStatusCode = "status"
	// DurationS is the standard field for a duration in seconds (float).
	DurationS = "duration_s"
	// ErrorMessage is the standard field for an error message.
	ErrorMessage = "error_message"
	// GitLabOrganizationID is the standard field for a GitLab organization ID.
	GitLabOrganizationID = "gl_organization_id"
	// ServiceName is the standard field for the emitting service or component.
	ServiceName = "service_name"
)

// DeprecatedField describes a legacy field name and the standard name that
// replaces it.
type DeprecatedField struct {
	Standard string
}

// Deprecated maps a legacy field name to its standard replacement.
var Deprecated = map[string]DeprecatedField{
	"organization_id": {Standard: GitLabOrganizationID},
	"error":           {Standard: ErrorMessage},
	"duration":        {Standard: DurationS},
	"component":       {Standard: ServiceName},
}

// VariantVersion is the log field schema version from which a standard field
// replaces its legacy alias. A field missing here (version 0) has not been
// migrated yet, so its legacy alias is always emitted.
var VariantVersion = map[string]int{
	GitLabOrganizationID: 1,
	ErrorMessage:         1,
	DurationS:            1,
}
