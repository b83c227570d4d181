# Prints `vagrant ssh-config` output for a three-VM vagrant-libvirt lab, rendered by the
# installed vagrant's own template and renderer (what `vagrant ssh-config` itself calls),
# with the ssh_info vagrant-libvirt reports: the management (DHCP) address, port 22,
# user vagrant and the per-machine key vagrant inserted.
#   ruby render_ssh_config.rb LAB_DIR > FILE
#   ruby render_ssh_config.rb LAB_DIR insecure > FILE
# With "insecure", the keys are those Vagrant 2.4 lists when `config.ssh.insert_key`
# is false: both insecure keys from ~/.vagrant.d/insecure_private_keys, ed25519 first
# (Vagrant 2.3.8 added the ed25519 pair and puts it before the RSA one).
gem_dir = Gem::Specification.find_by_name("vagrant").gem_dir rescue
  Dir["/usr/share/rubygems-integration/all/gems/vagrant-*"].max
$LOAD_PATH.unshift File.join(gem_dir, "lib")
require "erubi"
require "ostruct"
require "pathname"
module Vagrant
  def self.source_root = Pathname.new(GEM_DIR)
end
Vagrant.const_set(:GEM_DIR, gem_dir)
require "vagrant/util/template_renderer"

lab = ARGV.fetch(0)
insecure = ARGV[1] == "insecure"
home = File.dirname(File.dirname(lab))
[["master", "192.168.121.47"], ["node1", "192.168.121.183"], ["node2", "192.168.121.92"]].each do |name, ip|
  puts Vagrant::Util::TemplateRenderer.render(
    "commands/ssh_config/config",
    host_key: name, ssh_host: ip, ssh_port: 22, ssh_user: "vagrant", keys_only: true,
    verify_host_key: false,
    private_key_path: insecure ?
      %w[ed25519 rsa].map { |kind| "#{home}/.vagrant.d/insecure_private_keys/vagrant.key.#{kind}" } :
      ["#{lab}/.vagrant/machines/#{name}/libvirt/private_key"],
    log_level: nil, forward_agent: false, forward_x11: false, proxy_command: nil, config: nil
  )
  puts  # vagrant prints an empty line after each machine
end
