# Evaluates Vagrantfiles with a stand-in for Vagrant that records every setting,
# so a test can compare what Ruby actually read with the values it meant to write.
#
# Protocol (one request at a time, so one ruby serves a whole test session):
#   request:  "<byte length>\n" followed by that many bytes of Ruby source
#   response: one JSON line {"ok": bool, "error": str, "records": [...], "value": ...}
# records: [path, value] pairs. `config.vm.box = "x"` gives [["config","vm","box"], "x"];
# a call with a block (`config.vm.define "master" do |vm|`) extends the path with
# the call's name and arguments for everything set inside the block; any other call
# records its arguments (keyword arguments as a trailing object).
# value: the global $value after the source ran (for evaluating one literal).
require "json"

class Recorder < BasicObject
  def initialize(path, records)
    @path = path
    @records = records
  end

  def method_missing(name, *args, **kwargs, &block)
    name = name.to_s
    if name.end_with?("=")
      @records << [@path + [name.chomp("=")], args.first]
      nil
    elsif block
      block.call(::Recorder.new(@path + [name] + args.map(&:to_s), @records))
      nil
    elsif args.empty? && kwargs.empty?
      ::Recorder.new(@path + [name], @records)
    else
      @records << [@path + [name], kwargs.empty? ? args : args + [kwargs]]
      nil
    end
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    yield Recorder.new(["config"], $records)
  end
end

# Symbols become strings: JSON has no symbols, and the tests compare text.
def plain(value)
  case value
  when Hash then value.to_h { |k, v| [k.to_s, plain(v)] }
  when Array then value.map { |v| plain(v) }
  when Symbol then value.to_s
  else value
  end
end

$stdin.binmode
$stdout.sync = true
while (header = $stdin.gets)
  source = $stdin.read(Integer(header.strip)).force_encoding(Encoding::UTF_8)
  $records = []
  $value = nil
  reply = { "ok" => true, "error" => "", "records" => [], "value" => nil }
  begin
    # A fresh binding per request: nothing one Vagrantfile defines leaks into the next.
    eval(source, Object.new.instance_eval { binding }, "Vagrantfile", 1)
  rescue ScriptError, StandardError => e
    reply["ok"] = false
    reply["error"] = "#{e.class}: #{e.message}"
  end
  reply["records"] = plain($records)
  reply["value"] = plain($value)
  $stdout.write(JSON.generate(reply) + "\n")
end
