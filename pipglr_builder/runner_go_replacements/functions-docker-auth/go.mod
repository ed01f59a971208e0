module gitlab.com/functions/docker/auth

go 1.24
