# Renders every case of the Liquid corpus with Shopify's Ruby Liquid (Debian's ruby-liquid) and
# prints the outputs as JSON: {"file/case": {"output": "..."} | {"syntax_error": "..."}}.
# Usage: TZ=UTC ruby oracle.rb CORPUS_DIR
require 'liquid'
require 'json'
require 'timeout'

dir = ARGV.fetch(0)
vars = JSON.parse(File.read(File.join(dir, 'vars.json')))
results = {}
Dir.glob(File.join(dir, '*.cases')).sort.each do |path|
  file = File.basename(path, '.cases')
  name = nil
  lines = []
  flush = lambda do
    next unless name
    source = lines.join
    source = source.chomp
    begin
      # A template that runs away (a huge range) is reported, not waited for.
      Timeout.timeout(5) do
        template = Liquid::Template.parse(source)
        results["#{file}/#{name}"] = { 'output' => template.render(Marshal.load(Marshal.dump(vars))) }
      end
    rescue Liquid::SyntaxError => e
      results["#{file}/#{name}"] = { 'syntax_error' => e.to_s(false) }
    rescue Timeout::Error
      results["#{file}/#{name}"] = { 'timeout' => true }
    end
  end
  File.readlines(path).each do |line|
    if line.start_with?('### ')
      flush.call
      name = line[4..].strip
      lines = []
    else
      lines << line
    end
  end
  flush.call
end
puts JSON.pretty_generate(results.sort.to_h)
