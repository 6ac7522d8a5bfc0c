// keyhole console: the live parts (the audit's live tail and access
// requests as they come). Every page works without this script. It
// builds the DOM with textContent and attributes only: the page's
// Content-Security-Policy allows no HTML parsed from strings.
'use strict';
(function () {
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function link(href, text, cls) {
    var a = el('a', cls, text);
    a.setAttribute('href', href);
    return a;
  }
  function decisionClass(d) {
    switch (d) {
      case 'allow': case 'approved': case 'used': return 'ok';
      case 'deny': case 'denied': return 'bad';
      case 'error': case 'interrupted': case 'expired': return 'warn';
    }
    return 'info';
  }
  function cell(tr, child, cls) {
    var td = el('td', cls);
    if (typeof child === 'string') td.textContent = child; else td.appendChild(child);
    tr.appendChild(td);
    return td;
  }

  // The audit page's live tail.
  function auditTail() {
    var btn = document.getElementById('live');
    var rows = document.getElementById('audit-rows');
    if (!btn || !rows || !window.EventSource) return;
    var status = document.getElementById('live-status');
    var es = null, added = 0;
    btn.hidden = false;

    function row(ev) {
      var tr = el('tr');
      tr.setAttribute('data-seq', String(ev.seq));
      tr.className = 'fresh';
      cell(tr, link('/ui/audit/' + ev.seq, ev.seq));
      cell(tr, ev.time);
      cell(tr, link('/ui/sessions/' + encodeURIComponent(ev.session), ev.session, 'agent'));
      cell(tr, ev.scope, 'agent');
      cell(tr, ev.tool, 'agent');
      var req = cell(tr, el('span', 'agent req', ev.request));
      if (ev.reason) req.appendChild(el('span', 'reason agent', ev.reason));
      cell(tr, el('span', 'decision ' + decisionClass(ev.decision), ev.decision));
      cell(tr, ev.status);
      cell(tr, ev.duration);
      return tr;
    }
    function onRecord(e) {
      var ev = JSON.parse(e.data);
      var tr = row(ev);
      var old = rows.querySelector('tr[data-seq="' + Number(ev.seq) + '"]');
      if (old) {
        rows.replaceChild(tr, old);
      } else {
        rows.insertBefore(tr, rows.firstChild);
        added++;
      }
      var none = document.getElementById('no-records');
      if (none) none.hidden = true;
      status.textContent = 'Following: ' + added + ' new record' + (added === 1 ? '' : 's') + '.';
    }
    function start() {
      es = new EventSource(btn.getAttribute('data-stream'));
      es.addEventListener('record', onRecord);
      es.addEventListener('failed', function () { status.textContent = 'The audit log could not be read; stopped.'; stop(); });
      es.onopen = function () {
        btn.setAttribute('data-live', 'open');
        status.textContent = 'Following: ' + added + ' new records.';
      };
      es.onerror = function () {
        btn.setAttribute('data-live', 'lost');
        if (es) status.textContent = 'Connection lost; reconnecting…';
      };
      btn.setAttribute('aria-pressed', 'true');
      btn.textContent = 'Stop following';
    }
    function stop() {
      if (es) es.close();
      es = null;
      btn.removeAttribute('data-live');
      btn.setAttribute('aria-pressed', 'false');
      btn.textContent = 'Follow live';
    }
    btn.addEventListener('click', function () { if (es) stop(); else start(); });
  }

  // Access requests as they come: new cards on the list, new states on
  // a card and on a request's own page.
  function accessLive() {
    var status = document.getElementById('access-status');
    var single = document.getElementById('request-state');
    var host = status || single;
    if (!host || !window.EventSource) return;
    var tmpl = document.getElementById('request-template');
    var list = document.getElementById('requests');
    var es = new EventSource(host.getAttribute('data-stream'));
    // data-live says whether new requests show up without a reload.
    es.onopen = function () { host.setAttribute('data-live', 'open'); };
    es.onerror = function () { host.setAttribute('data-live', 'lost'); };

    function field(card, name) { return card.querySelector('[data-field="' + name + '"]'); }
    function setRisks(dd, risks) {
      while (dd.firstChild) dd.removeChild(dd.firstChild);
      if (!risks.length) { dd.appendChild(el('span', 'muted', 'none')); return; }
      risks.forEach(function (r) { dd.appendChild(el('span', 'risk', r)); dd.appendChild(document.createTextNode(' ')); });
    }
    function setState(node, state) {
      node.textContent = state;
      node.className = 'state ' + state;
    }
    function newCard(ev) {
      var card = tmpl.content.firstElementChild.cloneNode(true);
      var id = ev.id;
      card.id = id;
      card.setAttribute('data-request', id);
      var a = field(card, 'link');
      a.textContent = id;
      a.setAttribute('href', '/ui/access/' + encodeURIComponent(id));
      field(card, 'full').setAttribute('href', '/ui/access/' + encodeURIComponent(id));
      field(card, 'session').setAttribute('href', '/ui/sessions/' + encodeURIComponent(ev.session));
      card.querySelectorAll('form').forEach(function (f) {
        var verb = f.classList.contains('deny') ? 'deny' : 'approve';
        f.setAttribute('action', '/ui/access/' + encodeURIComponent(id) + '/' + verb);
      });
      card.querySelectorAll('label[for]').forEach(function (l) {
        var input = card.querySelector('#' + CSS.escape(l.getAttribute('for')));
        var fresh = l.getAttribute('for') + id;
        l.setAttribute('for', fresh);
        if (input) input.id = fresh;
      });
      list.insertBefore(card, list.firstChild);
      var none = document.getElementById('no-requests');
      if (none) none.hidden = true;
      return card;
    }
    function fill(card, ev) {
      setState(field(card, 'state'), ev.state);
      card.className = 'card request ' + ev.state;
      field(card, 'summary').textContent = ev.summary;
      field(card, 'session').textContent = ev.session;
      field(card, 'scope').textContent = ev.scope;
      setRisks(field(card, 'risks'), ev.risks);
      field(card, 'expires').textContent = ev.expires;
      field(card, 'waiting').textContent = String(ev.waiting);
      if (ev.state !== 'open') {
        var answer = card.querySelector('.answer');
        if (answer && !answer.contains(document.activeElement)) answer.parentNode.removeChild(answer);
        else if (answer) answer.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
        if (ev.decision && !field(card, 'decision')) {
          var dl = card.querySelector('dl');
          dl.appendChild(el('dt', null, 'Decision'));
          var dd = el('dd', 'agent', ev.decision);
          dd.setAttribute('data-field', 'decision');
          dl.appendChild(dd);
        }
      }
    }
    es.addEventListener('access', function (e) {
      var ev = JSON.parse(e.data);
      if (single) {
        if (ev.id !== single.getAttribute('data-request')) return;
        setState(single, ev.state);
        if (ev.state !== 'open') {
          var answer = document.getElementById('answer');
          if (answer) answer.hidden = true;
        }
        return;
      }
      var card = document.querySelector('[data-request="' + CSS.escape(ev.id) + '"]');
      if (!card && ev.type === 'request' && tmpl && list) card = newCard(ev);
      if (card) fill(card, ev);
      if (ev.type === 'request') status.textContent = 'New access request ' + ev.id + ': ' + ev.summary;
      else status.textContent = 'Access request ' + ev.id + ' is ' + ev.state + (ev.decision ? ' (' + ev.decision + ')' : '') + '.';
    });
    es.addEventListener('closed', function () { es.close(); host.setAttribute('data-live', 'closed'); });
  }

  document.addEventListener('DOMContentLoaded', function () {
    auditTail();
    accessLive();
  });
})();
