module gitlab.com/gitlab-org/fleeting/taskscaler

go 1.24

require (
	github.com/hashicorp/go-hclog v1.6.3
	gitlab.com/gitlab-org/fleeting/fleeting v0.0.0-20260818191615-630980b76a04
)

// For building this stand-in on its own; gitlab-runner's go.mod has its own replace.
replace gitlab.com/gitlab-org/fleeting/fleeting => ../fleeting
