module gitlab.com/gitlab-org/fleeting/fleeting

go 1.24

require github.com/hashicorp/go-hclog v1.6.3
