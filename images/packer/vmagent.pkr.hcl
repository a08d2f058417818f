# A vmagent appliance: vmagent (and optionally CVMFS, DIRAC and VO software) baked in, cloud-init
# state cleaned so that every VM boots fresh. Build one source with -only, e.g.
#   packer build -only=qemu.vmagent -var os=el9 -var iso_url=... images/packer
variable "os" {
  type    = string
  default = "el9"
  validation {
    condition     = contains(["el8", "el9", "debian12", "ubuntu2404"], var.os)
    error_message = "The os variable must be one of el8, el9, debian12, ubuntu2404."
  }
}

variable "vmagent_pip_spec" {
  type        = string
  default     = "vmagent"
  description = "what pip installs: a name, a version pin or a wheel URL"
}

variable "with_cvmfs" {
  type    = bool
  default = true
}

variable "dirac_version" {
  type        = string
  default     = ""
  description = "pre-install this DIRAC version; empty: install at boot"
}

variable "vo_script" {
  type        = string
  default     = ""
  description = "a VO's own provisioning script, run last"
}

variable "iso_url" {
  type    = string
  default = "file:///var/cache/vmagent-images/base.qcow2"
}

variable "iso_checksum" {
  type    = string
  default = "none"
}

variable "openstack_source_image" {
  type    = string
  default = ""
}

variable "openstack_flavor" {
  type    = string
  default = "m1.small"
}

variable "aws_source_ami" {
  type    = string
  default = ""
}

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

locals {
  image_name = "vmagent-${var.os}"
  family     = substr(var.os, 0, 2) == "el" ? "el" : "debian"
}

source "qemu" "vmagent" {
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  disk_image       = true
  format           = "qcow2"
  accelerator      = "tcg"
  headless         = true
  ssh_username     = "root"
  ssh_timeout      = "20m"
  shutdown_command = "shutdown -P now"
  output_directory = "output-${local.image_name}"
  vm_name          = "${local.image_name}.qcow2"
}

source "openstack" "vmagent" {
  image_name   = local.image_name
  source_image = var.openstack_source_image
  flavor       = var.openstack_flavor
  ssh_username = "cloud-user"
}

source "amazon-ebs" "vmagent" {
  ami_name      = local.image_name
  source_ami    = var.aws_source_ami
  region        = var.aws_region
  instance_type = "t3.medium"
  ssh_username  = "ec2-user"
}

build {
  sources = ["source.qemu.vmagent", "source.openstack.vmagent", "source.amazon-ebs.vmagent"]

  provisioner "shell" {
    environment_vars = [
      "VMAGENT_FAMILY=${local.family}",
      "VMAGENT_PIP_SPEC=${var.vmagent_pip_spec}",
      "WITH_CVMFS=${var.with_cvmfs}",
      "DIRAC_VERSION=${var.dirac_version}",
    ]
    scripts = ["${path.root}/scripts/install-vmagent.sh", "${path.root}/scripts/clean-cloud-init.sh"]
  }
}
